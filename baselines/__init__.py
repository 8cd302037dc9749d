"""Reference meta-learners. Each consumes metabench's public API like any user would."""
