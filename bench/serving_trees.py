"""What a bundle's tree ensembles cost on one fixed input and on new inputs, and a branch-free alternative.

    python bench/serving_trees.py BUNDLE [--calls 20000] [--branch-free]

Cuts the `TreeEnsembleRegressor` nodes out of the bundle's `model.onnx` into a graph of their own (the same
attributes, one output column per ensemble) and times it with ONNX Runtime on one thread, CPU clock: on one
fixed row, and on 2,000 random standardized rows in turn (a service pricing an asset once a day always sends
a new one). `--branch-free` also builds the same trees as plain ONNX operators, one depth level at a time
(`Gather` of each tree's node, `GatherElements` of its feature, `LessOrEqual`, `Where` of the children; leaves
point to themselves), checks it against the ensembles and times it the same way. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def ensembles(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.op_type == "TreeEnsembleRegressor"]


def trees_only(model: onnx.ModelProto, width: int) -> onnx.ModelProto:
    """The ensembles of `model` reading one input `x` (batch, width), their outputs concatenated."""
    nodes, outputs = [], []
    for node in ensembles(model):
        copy = helper.make_node(node.op_type, ["x"], list(node.output), domain=node.domain)
        copy.attribute.extend(node.attribute)
        nodes.append(copy)
        outputs.append(node.output[0])
    nodes.append(helper.make_node("Concat", outputs, ["y"], axis=1))
    graph = helper.make_graph(nodes, "trees", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", len(outputs)])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)])


def node_table(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every tree node of every ensemble in one table (leaves point to themselves), each tree's root and
    ensemble, and the depth of the deepest tree."""
    feature, threshold, true_child, false_child, value, roots, owner = [], [], [], [], [], [], []
    for e, node in enumerate(ensembles(model)):
        a = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        if a.get("post_transform", b"NONE") != b"NONE" or a.get("base_values"):
            raise SystemExit(f"{node.name}: post_transform or base values are not handled here")
        base = len(feature)
        place = {(t, i): base + k for k, (t, i) in enumerate(zip(a["nodes_treeids"], a["nodes_nodeids"]))}
        for k, (t, mode) in enumerate(zip(a["nodes_treeids"], a["nodes_modes"])):
            leaf = mode == b"LEAF"
            if not leaf and mode != b"BRANCH_LEQ":
                raise SystemExit(f"{node.name}: node mode {mode!r} is not handled here")
            feature.append(0 if leaf else a["nodes_featureids"][k])
            threshold.append(0.0 if leaf else a["nodes_values"][k])
            true_child.append(base + k if leaf else place[(t, a["nodes_truenodeids"][k])])
            false_child.append(base + k if leaf else place[(t, a["nodes_falsenodeids"][k])])
            value.append(0.0)
        for t, i, weight in zip(a["target_treeids"], a["target_nodeids"], a["target_weights"]):
            value[place[(t, i)]] += weight
        children = {c for g in range(base, len(feature)) for c in (true_child[g], false_child[g]) if c != g}
        tree_roots = sorted(set(place.values()) - children)
        roots += tree_roots
        owner += [e] * len(tree_roots)
    true_child, false_child = np.array(true_child), np.array(false_child)

    def depth(root: int) -> int:
        deepest, stack = 0, [(root, 0)]
        while stack:
            g, d = stack.pop()
            if true_child[g] == g:
                deepest = max(deepest, d)
            else:
                stack += [(true_child[g], d + 1), (false_child[g], d + 1)]
        return deepest

    return {"feature": np.array(feature, np.int64), "threshold": np.array(threshold, np.float32),
            "true": true_child.astype(np.int64), "false": false_child.astype(np.int64),
            "value": np.array(value, np.float32), "roots": np.array(roots, np.int64), "owner": np.array(owner),
            "depth": max(depth(r) for r in roots)}


def branch_free(table: dict, width: int) -> onnx.ModelProto:
    """The trees of `table` as plain ONNX operators, one depth level at a time."""
    n_trees, n_ensembles = len(table["roots"]), int(table["owner"].max()) + 1
    indicator = np.zeros((n_trees, n_ensembles), np.float32)
    indicator[np.arange(n_trees), table["owner"]] = 1.0
    constants = {"feature": table["feature"], "threshold": table["threshold"], "true": table["true"],
                 "false": table["false"], "value": table["value"], "roots": table["roots"][None],
                 "trees": np.array([n_trees], np.int64), "indicator": indicator}
    nodes = [helper.make_node("Shape", ["x"], ["rows"], start=0, end=1),
             helper.make_node("Concat", ["rows", "trees"], ["shape"], axis=0),
             helper.make_node("Expand", ["roots", "shape"], ["at0"])]
    at = "at0"
    for level in range(table["depth"]):
        p = f"l{level}_"
        nodes += [helper.make_node("Gather", ["feature", at], [p + "f"]),
                  helper.make_node("GatherElements", ["x", p + "f"], [p + "xv"], axis=1),
                  helper.make_node("Gather", ["threshold", at], [p + "th"]),
                  helper.make_node("LessOrEqual", [p + "xv", p + "th"], [p + "go"]),
                  helper.make_node("Gather", ["true", at], [p + "t"]),
                  helper.make_node("Gather", ["false", at], [p + "e"]),
                  helper.make_node("Where", [p + "go", p + "t", p + "e"], [p + "at"])]
        at = p + "at"
    nodes += [helper.make_node("Gather", ["value", at], ["leaves"]),
              helper.make_node("MatMul", ["leaves", "indicator"], ["y"])]
    graph = helper.make_graph(nodes, "branch_free",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_ensembles])],
                              [numpy_helper.from_array(v, k) for k, v in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def p50(run: ort.InferenceSession, rows: np.ndarray, calls: int, fixed: bool) -> float:
    spent = []
    for k in range(calls):
        x = rows[:1] if fixed else rows[k % len(rows)][None]
        began = time.thread_time_ns()
        run.run(None, {"x": x})
        spent.append(time.thread_time_ns() - began)
    return float(np.percentile(spent[calls // 10:], 50)) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--branch-free", action="store_true")
    args = parser.parse_args()
    model = onnx.load(args.bundle / "model.onnx")
    if not ensembles(model):
        raise SystemExit(f"{args.bundle}: no tree ensemble in model.onnx")
    table = node_table(model)
    width = int(table["feature"].max()) + 1  # the features the trees read: a prefix of the model's input row
    rows = np.random.default_rng(0).standard_normal((2000, width)).astype(np.float32)
    print(f"{len(table['roots'])} trees, {len(table['feature']):,} nodes, depth up to {table['depth']}; "
          f"one thread, CPU clock, p50 of {args.calls:,} calls")
    graphs = {"tree ensembles (ONNX Runtime)": session(trees_only(model, width))}
    if args.branch_free:
        graphs["branch-free operators"] = session(branch_free(table, width))
        gap = np.abs(graphs["branch-free operators"].run(None, {"x": rows})[0]
                     - graphs["tree ensembles (ONNX Runtime)"].run(None, {"x": rows})[0]).max()
        print(f"branch-free against the ensembles: largest difference {gap:.2g}")
    for label, run in graphs.items():
        print(f"  {label:<30} one fixed row {p50(run, rows, args.calls, True):7.1f} us   "
              f"new rows {p50(run, rows, args.calls, False):7.1f} us")


if __name__ == "__main__":
    main()
