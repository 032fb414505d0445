"""The training engine: the LightningModule (`module`), its optimiser groups (`optim`) and LR schedules
(`schedulers`), the loggers, the run record (`results`) and the callbacks. It uses the library (models, data,
metrics, loading), which never imports it."""
