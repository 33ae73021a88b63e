"""The demo of ``make demo``: pipeline steps and a model API that use the mlobs SDK.

Each module runs with ``python -m demo.<name>`` from the repository root, or in the
``mlobs/demo`` image (demo/Dockerfile), where the chart runs them as Kubernetes Jobs
and a Deployment:

* :mod:`demo.train` trains a small logistic-regression churn model and records its
  params, per-epoch metrics, inputs, outputs and logs; ``--fail`` makes it diverge;
* :mod:`demo.oom` allocates memory until the kernel OOM-kills it;
* :mod:`demo.model_api` serves the model behind :class:`pipeline_sdk.MLObsMiddleware`;
* :mod:`demo.traffic` sends requests to it from simulated users.

Without ``MLOBS_FLUENTD_HOST`` they write to the local store, so they also run on a laptop.
"""
