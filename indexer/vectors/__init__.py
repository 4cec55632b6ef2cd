"""FAISS index over L2-normalised embeddings; the FAISS ids are the case ids (docs/indexer.md).

Everything FAISS-specific in the project lives in this package; the SQL store and the
service talk to :class:`indexer.vectors.index.VectorIndex` only.

Modules
-------
``index``        :class:`VectorIndex` (build, search, add, remove, save, load) and
                 :func:`set_search_threads`
``factory``      :class:`IndexSpec` and :func:`choose_factory`: the ``index_factory`` string
                 from the vector count, dimension and memory budget
``parameters``   search parameters: defaults per kind of index, setting them, ID selectors
``strategies``   filtered search (``allowed_ids``): one strategy per kind of index
``ids``          id mapping: the ids stored, rows → ids under an IDMap
``anatomy``      how an index is nested (IDMap, refine, HNSW, IVF)
``building``     build steps: an empty index, training on a sample, adding in batches
``gpu``          GPU copies and GPU k-means
``sidecar``      ``index.json``: the format version, provenance, the hash of ``index.faiss``
``persistence``  ``index.faiss`` + ``index.json`` and ``vectors.npy`` + ``ids.npy`` on disk
``stored``       :class:`StoredVectors`: a version's raw vectors by case id (memory-mapped),
                 for the raw cosine the match probability reads
``space``        the centre: the mean a version's vectors and queries are centred on
``arrays``       the arrays taken and given: checks on input, padded results
``errors``       :class:`VectorIndexError`

Decisions
---------
* **Metric.** Inner product on unit vectors (cosine similarity). Vectors whose norm is off by
  more than ``arrays.NORM_TOLERANCE`` are re-normalised with a warning; non-finite or zero
  vectors are refused (they cannot be normalised and would poison an index silently).
* **Ids.** FAISS ids are the SQL primary keys (non-negative int64; ``-1`` is FAISS's "no
  hit"). Factories without native ids (Flat, HNSW, refine stages) are wrapped in
  ``IndexIDMap2``, which also keeps the id → row map that ``reconstruct`` by id needs. IVF
  indexes store ids natively and are *not* wrapped: ``IndexIDMap.remove_ids`` assumes the
  wrapped index renumbers its rows in order after a removal, which IVF does not do.
* **Training.** Indexes that need training are trained on a seeded sample of
  ``train_sample`` vectors, raised to FAISS's recommended 39 points per centroid when the
  archive has that many. An archive smaller than that minimum (or empty) gets an exact
  ``Flat`` index instead; the reason is logged and recorded in the sidecar
  (``fallback_reason``), and ``VectorIndex.spec`` is the index actually built.
* **Filtered search** (``allowed_ids``) happens inside FAISS where it can, see
  :mod:`indexer.vectors.strategies`; over-fetching is the fallback for GPU indexes.
* **GPU.** With ``use_gpu`` (default: ``faiss.get_num_gpus() > 0``) the CPU index stays the
  source of truth (it is what ``VectorIndex.save`` writes, and add/remove change it) and
  a GPU copy — sharded over all GPUs when there are several — answers searches. IVF coarse
  k-means runs on the GPU during ``VectorIndex.build``. FAISS has no GPU HNSW, so graph
  indexes stay on the CPU (logged). After add/remove the GPU copy is made again.
* **Files.** ``index.faiss`` + ``index.json`` (and ``vectors.npy`` + ``ids.npy`` from
  ``save_vectors``), written through :func:`files.atomic.atomic_paths`, index first. The
  sidecar records the size and SHA-256 of ``index.faiss``, so a truncated, corrupt or
  mismatched pair is refused on load instead of crashing in FAISS.
* **Threads.** This package never sets FAISS's OpenMP thread count (a process-wide
  setting). One query gains nothing from OpenMP, and on busy cores every parallel region
  waits for descheduled threads (measured: an HNSW query 0.1 ms alone, 7 ms with 2 threads on
  2 loaded cores), so ids under an IDMap are mapped in numpy rather than by
  ``IndexIDMap.search``'s parallel loop, and a server answering single queries from several
  request threads should call ``faiss.omp_set_num_threads(1)`` (``set_search_threads``).
* **Concurrency.** Concurrent ``VectorIndex.search`` calls are safe; ``add``,
  ``remove``, ``set_search_params`` and ``save`` must not run concurrently with anything
  else on the same object (new versions are built as new objects in new folders).
"""
