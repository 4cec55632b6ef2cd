"""The dataset layouts, one module each. Every module exports ``NAME``, ``LOOKS_FOR`` (what
detection looks for, in words), ``FILE_KIND`` (the single file it reads instead of a folder,
in words, or ``""``), ``detect(root) -> bool`` and ``read(root, carve) -> Archive``;
:mod:`archives.registry` lists them in detection order."""
