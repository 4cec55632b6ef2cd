"""A DICOMweb client: QIDO-RS listings, WADO-RS retrieval, the Orthanc change feed."""
