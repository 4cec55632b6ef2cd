"""Dataset archives on disk: one module per layout, one ordered registry that detection
and reading both walk, samples and their content, splits, and which columns identify a
patient."""
