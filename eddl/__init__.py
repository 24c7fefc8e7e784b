"""EDDL: distributed training across edge devices and microcontrollers.

One import namespace, ``eddl``:

* ``eddl.learn``    the math (pure numpy, no I/O): models, SGD, L-SGD, TIFeD, aggregation rules.
* ``eddl.data``     datasets shipped with the package, IDX/npz loaders, partitioners.
* ``eddl.mcu``      serial framing, CRC, the MCU driver and firmware launch helpers.
* ``eddl.net``      gRPC channel/server factories, chunked tensor transfer.
* ``eddl.jobspec``  ``JobSpec``: a job's ``[job]`` table, parsed with every field bounded;
  ``eddl.jobcheck`` checks it in full (data, model, memory) for the CLI and the leader alike;
  ``eddl.policyconfig`` holds its ``[job.policy]`` thresholds.
* ``eddl.proto``    generated protobuf/gRPC code (regenerate with ``python proto/generate.py``).
* ``eddl.leader``   the leader daemon (folder ``leader/``).
* ``eddl.worker``   the worker daemon (folder ``worker/``).
* ``eddl.profiler`` device profiles, throughput and network probes (folder ``profiler/``).
* ``eddl.cluster``  a whole cluster as local processes (``eddl local``, benchmarks, tests).
* ``eddl.childproc`` child processes that die with their parent; daemon command lines.
* ``eddl.cli``      the ``eddl`` command for people.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
