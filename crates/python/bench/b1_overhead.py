"""B1 from Python against the command: the full Laplace-GGN (DNN2GP GP) predictive of the MLP
1-100-100-1 tanh (P = 10,401) at its MAP weights on 2,000 training points, at 1,000 test points
(σ = 0.2, δ = 1), run as `dnn2gp predict` and as `dnn2gp.GP(model).fit(X, y); gp(X*)`, in
interleaved rounds. Prints each round's seconds and the ratios, and checks that both give the
same variances to the bit.

    python crates/python/bench/b1_overhead.py [--baselines ../shared/baselines/data] [--rounds 5]

Three timings per round:
- `cli`: the command, end to end (process start, reading the CSV files, the GP, writing its
  CSV and JSON);
- `python_script`: a fresh interpreter doing the same (import, reading the CSVs with numpy,
  the GP, saving the predictive with `np.save`);
- `python_calls`: the two calls alone, in this process, on arrays already in memory.
"""

import argparse
import csv
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

import dnn2gp

ROOT = pathlib.Path(__file__).resolve().parents[3]
ARCH = "1:dense100,tanh,dense100,tanh,dense1"
SHAPES = [("0.weight", (100, 1)), ("0.bias", (100,)), ("2.weight", (100, 100)), ("2.bias", (100,)),
          ("4.weight", (1, 100)), ("4.bias", (1,))]

SCRIPT = """
import sys, numpy as np, dnn2gp
model = dnn2gp.Model.load(sys.argv[1])
train = np.loadtxt(sys.argv[2], delimiter=",", skiprows=1)
xt = np.loadtxt(sys.argv[3], delimiter=",", skiprows=1).reshape(-1, 1)
gp = dnn2gp.GP(model, space="function")
gp.fit(np.ascontiguousarray(train[:, :1]), np.ascontiguousarray(train[:, 1]))
mean, var = gp(xt)
np.save(sys.argv[4], np.c_[mean, var])
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baselines", type=pathlib.Path, default=ROOT.parent / "shared" / "baselines" / "data")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bin", default=os.environ.get("DNN2GP_BIN", str(ROOT / "target" / "release" / "dnn2gp")))
    a = ap.parse_args()
    flat = np.loadtxt(a.baselines / "b1_seed0_map_params.txt")
    state, at = {}, 0
    for name, shape in SHAPES:
        n = int(np.prod(shape))
        state[name] = flat[at:at + n].reshape(shape)
        at += n
    model = dnn2gp.Model(ARCH, state, "regression", sigma_noise=0.2, prior_precision=1.0)
    train_csv, test_csv = a.baselines / "b1_seed0_train.csv", a.baselines / "b1_seed0_test.csv"
    train = np.loadtxt(train_csv, delimiter=",", skiprows=1)
    x, y = np.ascontiguousarray(train[:, :1]), np.ascontiguousarray(train[:, 1])
    xt = np.loadtxt(test_csv, delimiter=",", skiprows=1).reshape(-1, 1)
    tmp = pathlib.Path(tempfile.mkdtemp())
    model.save(tmp / "b1.safetensors")
    script = tmp / "b1.py"
    script.write_text(SCRIPT)

    def cli():
        subprocess.run([a.bin, "predict", "--model", str(tmp / "b1.safetensors"), "--train-data",
                        str(train_csv), "--data", str(test_csv), "--space", "function",
                        "--out", str(tmp / "cli"), "--quiet"], check=True, stdout=subprocess.DEVNULL)

    def python_script():
        subprocess.run([sys.executable, str(script), str(tmp / "b1.safetensors"), str(train_csv),
                        str(test_csv), str(tmp / "py.npy")], check=True)

    def python_calls():
        gp = dnn2gp.GP(model, space="function")
        gp.fit(x, y)
        return gp(xt)

    times = {"cli": [], "python_script": [], "python_calls": []}
    for r in range(a.rounds):
        for name, f in [("cli", cli), ("python_script", python_script), ("python_calls", python_calls)]:
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))
    with open(tmp / "cli" / "predictions.csv") as f:
        var_cli = np.array([float(row["var_f"]) for row in csv.DictReader(f)])
    var_py = np.load(tmp / "py.npy")[:, 1]
    same = np.array_equal(var_cli, var_py) and np.array_equal(var_py, python_calls()[1][:, 0])
    med = {k: float(np.median(v)) for k, v in times.items()}
    print("median: " + ", ".join(f"{k} {v:.3f} s" for k, v in med.items()))
    print(f"python_script / cli = {med['python_script'] / med['cli']:.3f}, "
          f"python_calls / cli = {med['python_calls'] / med['cli']:.3f}; "
          f"the same variances to the bit: {same}")


if __name__ == "__main__":
    main()
