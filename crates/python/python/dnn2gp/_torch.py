"""The export behind `Model.from_torch`: torch's ONNX exporter, in eval mode, with BatchNorm
kept apart from the convolutions (`do_constant_folding=False`) so that the parameters stay the
module's own, under its state_dict names. Imports torch only when called."""

import io
import warnings


def export(module, example_input):
    """ONNX bytes of `module` at `example_input`, the input and the module's output (numpy)."""
    try:
        import onnx  # noqa: F401 (torch's exporter writes through it)
        import torch
    except ImportError as e:  # the package does not depend on torch
        raise ImportError("Model.from_torch needs torch and onnx installed (pip install torch onnx); "
                          "or export yourself and use Model.from_onnx") from e
    x = example_input if isinstance(example_input, torch.Tensor) else torch.as_tensor(example_input)
    # The module's own precision (float64 modules export float64 weights); integer inputs
    # (indices) stay integers.
    params = [p for p in module.parameters() if p.is_floating_point()]
    dtype = params[0].dtype if params else torch.float32
    device = params[0].device if params else torch.device("cpu")
    x = x.detach().cpu()
    if x.is_floating_point():
        x = x.to(dtype)
    was_training = module.training
    module.eval()
    # nn.MultiheadAttention's fused fast path has no ONNX export; its composite form has.
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha else None
    if mha:
        mha.set_fastpath_enabled(False)
    try:
        buf = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.onnx.export(module.cpu(), (x,), buf, opset_version=17, do_constant_folding=False,
                              dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
            y = module(x)
        _warn_about(caught, torch)
    finally:
        module.train(was_training)
        module.to(device)
        if mha:
            mha.set_fastpath_enabled(fast)
    n = x.shape[0]
    return (buf.getvalue(), x.reshape(n, -1).double().numpy(), y.reshape(n, -1).double().cpu().numpy())


def _warn_about(caught, torch):
    """The exporter's warnings that concern the module: a trace that may not hold for other
    inputs (a forward branching on the data is traced along the branch the example takes) as
    a RuntimeWarning naming the consequence; the legacy exporter's notices about torch's own
    API dropped; the rest passed on."""
    tracer = getattr(torch.jit, "TracerWarning", ())
    for w in caught:
        if tracer and issubclass(w.category, tracer):
            warnings.warn(f"Model.from_torch: the exported network follows the branch the "
                          f"example input takes; where the module's forward depends on the "
                          f"data, other inputs differ ({w.message})", RuntimeWarning,
                          stacklevel=3)
        elif not issubclass(w.category, (DeprecationWarning, FutureWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
