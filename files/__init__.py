"""Files on disk: the one way this project replaces a file so no reader sees half of it."""
