"""Quality figures computed from arrays: retrieval (precision@k, mAP, kNN vote) and
classification (balanced accuracy, F1, AUC), shared by training and evaluation."""
