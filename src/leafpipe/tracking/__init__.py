"""Run tracking: where a run's metrics go besides its own files (`report_to`: TensorBoard,
Weights & Biases, MLflow, Trackio). `spec` is torch-free and read by the config check; `runs`
and `backends` start and feed the runs; `evaluation` sends the graded scores."""
