"""The type stubs (`_dnn2gp.pyi`, written beside the Rust classes) say what the module has: the
same classes, functions, methods and properties, each callable with the same parameters (and
defaults) in the same order, so that they cannot drift apart."""

import ast
import inspect
import pathlib

import dnn2gp._dnn2gp as module

STUBS = pathlib.Path(module.__file__).with_name("_dnn2gp.pyi")


def stub_tree():
    return ast.parse(STUBS.read_text())


def params(fn: ast.FunctionDef):
    """A stub's parameter names and whether each has a default, `self` left out."""
    args = fn.args.posonlyargs + fn.args.args
    defaults = [False] * (len(args) - len(fn.args.defaults)) + [True] * len(fn.args.defaults)
    out = [(a.arg, d) for a, d in zip(args, defaults) if a.arg != "self"]
    out += [(a.arg, d is not None) for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults)]
    return out


def runtime_params(obj):
    sig = inspect.signature(obj)
    return [
        (name, p.default is not inspect.Parameter.empty)
        for name, p in sig.parameters.items()
        if name != "self"
    ]


def public(cls):
    return {n for n in dir(cls) if not n.startswith("_") or n in ("__call__", "__add__")}


def test_every_name_in_the_module_is_in_the_stubs_and_the_other_way():
    tree = stub_tree()
    # Typing helpers (protocols) are the stubs' own.
    stub_classes = {
        n.name: n
        for n in tree.body
        if isinstance(n, ast.ClassDef)
        and not any(isinstance(b, ast.Name) and b.id == "Protocol" for b in n.bases)
    }
    stub_functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    runtime = {n for n in dir(module) if not n.startswith("_")}
    assert set(stub_classes) | set(stub_functions) == runtime
    for name, node in stub_functions.items():
        assert params(node) == runtime_params(getattr(module, name)), name
    for name, node in stub_classes.items():
        cls = getattr(module, name)
        members = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
        assert set(members) - {"__init__"} == public(cls), name
        if "__init__" in members:
            assert params(members["__init__"]) == runtime_params(cls), name
        for mname, m in members.items():
            if mname.startswith("__"):
                # Slots (`__call__`, `__add__`) carry no signature at run time.
                continue
            decorators = {d.id for d in m.decorator_list if isinstance(d, ast.Name)}
            setter = any(isinstance(d, ast.Attribute) and d.attr == "setter"
                         for d in m.decorator_list)
            attr = inspect.getattr_static(cls, mname)
            if "property" in decorators or setter:
                assert type(attr).__name__ == "getset_descriptor", f"{name}.{mname}"
                continue
            fn = getattr(cls, mname)
            assert params(m) == runtime_params(fn), f"{name}.{mname}"
