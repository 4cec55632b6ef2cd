"""POST /query with the version's label-aware ranking (indexer.label_ranking).

The test collection's model is freshly initialised, so its version keeps λ = 0 (the
indexer found no gain). To see the route rank by the label term, the loaded version is
given a λ so large that the prior decides the order: the cases must then come in the
order of the query's probability of their label, each keeping its cosine as its score;
``label_ranking=false`` must give the cosine order back.
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from test_query import query

from indexer.label_ranking import CaseDiagnoses, LabelRanking
from labels import Task


def test_a_version_without_a_gain_ranks_by_the_cosine(client: TestClient, ham_image: bytes) -> None:
    body = query(client, ham_image, top_k=10)
    assert body["index"]["label_weight"] == 0.0
    assert body["index"]["ranking"] == "centred cosine"
    scores = [case["score"] for case in body["cases"]]
    assert scores == sorted(scores, reverse=True)
    again = query(client, ham_image, top_k=10, label_ranking="false")
    assert [c["case_id"] for c in again["cases"]] == [c["case_id"] for c in body["cases"]]


def test_the_label_term_orders_the_cases_and_can_be_turned_off(
    client: TestClient, ham_image: bytes
) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    runtime = services.registry.get("derm")
    index = runtime.index
    rows = services.store.case_diagnoses(index.collection.id)
    codes = index.collection.label_codes
    index.ranking = LabelRanking(1000.0, codes=codes, task="single_label")
    index.diagnoses = CaseDiagnoses.of(rows, codes, Task.SINGLE_LABEL)
    body = query(client, ham_image, top_k=30)
    assert body["index"]["label_weight"] == 1000.0
    assert "1000 × log P(the query has the case's diagnosis)" in body["index"]["ranking"]
    p = {pred["code"]: pred["probability"] for pred in body["predictions"]}
    priors = [p[case["labels"][0]["code"]] for case in body["cases"]]
    held = {code for _, labels, _ in rows for code in labels}
    assert set(priors) == {max(p[code] for code in held)}  # the prior decides at this λ
    assert [c["rank"] for c in body["cases"]] == list(range(1, 31))

    plain = query(client, ham_image, top_k=30, label_ranking="false")
    assert plain["index"]["ranking"] == "centred cosine"
    assert plain["index"]["label_weight"] == 0.0  # what ordered this answer
    # the vote counts the cosine's own top k either way: it never leans on the classifier
    assert body["knn_vote"] == plain["knn_vote"]
    assert body["knn_vote_basis"] == plain["knn_vote_basis"]
    labels_by_cosine = [case["labels"][0]["code"] for case in plain["cases"]]
    assert {v["code"]: v["count"] for v in body["knn_vote"]} == {
        code: labels_by_cosine.count(code) for code in set(labels_by_cosine)
    }
    scores = [case["score"] for case in plain["cases"]]
    assert scores == sorted(scores, reverse=True)
    assert [c["case_id"] for c in plain["cases"]] != [c["case_id"] for c in body["cases"]]
    served = {c["case_id"]: c["score"] for c in plain["cases"]}
    for case in body["cases"]:  # the same cosine, whichever order shows it
        if case["case_id"] in served:
            assert abs(case["score"] - served[case["case_id"]]) < 1e-5


def test_a_label_ranking_that_is_not_a_boolean_is_refused(
    client: TestClient, ham_image: bytes
) -> None:
    response = client.post(
        "/query", params={"label_ranking": "sometimes"}, files={"file": ("upload", ham_image)}
    )
    assert response.status_code == 400  # the service's error contract for a bad parameter
    assert "label_ranking" in response.json()["detail"]
