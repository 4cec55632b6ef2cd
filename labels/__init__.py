"""What a collection's labels are: the task (one label or several per image) and the
label space (codes and display names)."""
