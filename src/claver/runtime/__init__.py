"""Inference runtimes for zero-shot prediction: ONNX export and ONNX Runtime sessions
(:mod:`claver.runtime.onnx`), the towers as exportable modules (:mod:`claver.runtime.towers`),
the CPU features reduced precision depends on (:mod:`claver.runtime.cpu`) and the agreement
test a faster mode must pass against fp32 eager (:mod:`claver.runtime.agreement`).

Nothing heavy is imported here: ``onnxruntime`` and ``onnx`` are optional (``pip install
'claver[onnx]'``) and imported only when a session is built or a model exported.
"""
