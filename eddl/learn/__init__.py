"""The math of EDDL: pure numpy, no I/O, importing nothing else of the project.

Modules:

* ``params``      the ``Params`` type (named arrays) and its validation.
* ``model``       MLP specs, parameter init, forward pass, prediction.
* ``activations`` / ``losses``  elementwise activations (and derivatives from outputs), losses.
* ``trainer``     the ``Trainer`` interface every training algorithm implements.
* ``sgd``         mini-batch SGD with per-weight gradient buffers (L-SGD's "Algorithm 1").
* ``lsgd``        L-SGD: per-sample, in-place fused backward+update, ping-pong delta buffers.
* ``q8model``     L-SGD-q8's int8 fixed-point model: formats, activation tables, quantization,
  integer inference.
* ``lsgd_q8``     L-SGD on int8 fixed-point weights (integer-only, for fine-tuning): the trainer
  and its stochastic rounding; re-exports ``q8model``.
* ``fixedpoint``  integer helpers of TIFeD and L-SGD-q8: floor division, round-half-away
  shifts, saturation, pixel/label checks.
* ``tifedmodel``  TIFeD's integer model: config, DFA feedback matrices, pocket tanh, inference.
* ``tifed``       TIFeD integer-only Direct Feedback Alignment training (full-network,
  single-layer); re-exports ``tifedmodel``.
* ``aggregation`` FedAvg, TIFeD's truncating integer mean, FedAsync, FedBuff, EDDL's mix.
* ``algorithm_base`` the ``Algorithm`` interface, ``AlgorithmError``, hyper-parameter checks.
* ``algorithms``  algorithms by name: model init, trainer, input representation, evaluation.
"""
