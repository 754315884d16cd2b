"""Refinement gain against graph purity: raw, propagated and trained features on oracle-rewired graphs.

Takes a run's exported graphs (``RUN/graphs/{teacher,student}.pt``) or a features file (a dict with
``teacher_train``, ``teacher_test``, ``student_train``, ``student_test``, ``ytr``, ``yte``; each stream then gets
its own cosine kNN graph with ``--edges`` neighbours per node). For every target purity from the measured one
to 90 %, a share of the *wrong-class* training edges of both graphs is rewired to a random training node of the
target's class (labels are used here, and only to build these oracle graphs; edges into held-out nodes are
rewired the same way), then:

- raw: the [teacher; student] node features;
- propagated: ``refine.encoder=appnp`` with the label-free choice of alpha and hops (the default);
- trained (``--epochs`` > 0): graph BYOL, GCN 2 x 256 with the self term ``--alpha`` and the anti-collapse
  weight ``--variance-weight``.

Each is measured by weighted kNN (k = 20, T = 0.07) and the standardised logistic probe (``--probe-seeds``
seeds, to convergence) on the same train/test nodes. Prints a table, writes
``benchmarks/results/refine_vs_purity.json`` and ``docs/img/refine_vs_purity.png``.

    python benchmarks/refine_vs_purity.py --run runs/cifar10-cpu [--purities 0.3 0.4 0.6 0.9] [--epochs 0]
    python benchmarks/refine_vs_purity.py --run RUN --purities 0.5 0.7 0.9 --epochs 20 --fixed 0.5 2 \
        --probe-seeds 1 --reuse     # the README's figure; --reuse keeps curves already measured
    python benchmarks/refine_vs_purity.py --features feats.pt --edges 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from sslgraph.config import RefineConfig
from sslgraph.eval.knn import knn_accuracy
from sslgraph.eval.linear import logistic_regression_probe
from sslgraph.graph.edges import same_class_share
from sslgraph.graph.export import load_graph
from sslgraph.refine.train import propagate_graphs, refine_graphs
from sslgraph.utils.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def knn_graph(x: Tensor, num_train: int, k: int, chunk: int = 4096) -> Tensor:
    """Edges ``j -> i`` from each node's ``k`` most similar training nodes (itself excluded)."""
    z = F.normalize(x.float(), dim=1)
    sources = []
    for start in range(0, z.shape[0], chunk):
        sim = z[start:start + chunk] @ z[:num_train].T
        rows = torch.arange(start, min(start + chunk, z.shape[0]))
        own = rows < num_train
        sim[own.nonzero().flatten(), rows[own]] = -2.0
        sources.append(sim.topk(k, dim=1).indices)
    src = torch.cat(sources).reshape(-1)
    return torch.stack([src, torch.arange(z.shape[0]).repeat_interleave(k)])


def train_purity(data: Data) -> float:
    """Same-class share of the training edges (both ends training nodes), the purity the issue tracks."""
    train = data.train_mask[data.edge_index[0]] & data.train_mask[data.edge_index[1]]
    return same_class_share(data.edge_index[:, train], data.y)


def from_features(path: Path, k: int) -> tuple[Data, Data]:
    d = torch.load(path, weights_only=True)
    y = torch.cat([d["ytr"], d["yte"]]).long()
    num_train = d["ytr"].shape[0]
    node = torch.arange(y.numel())
    graphs = []
    for stream in ("teacher", "student"):
        x = torch.cat([d[f"{stream}_train"], d[f"{stream}_test"]]).float()
        edges = knn_graph(x, num_train, k)
        graphs.append(Data(x=x, edge_index=edges, edge_weight=torch.ones(edges.shape[1]), y=y,
                           train_mask=node < num_train, test_mask=node >= num_train, num_train=num_train))
    return graphs[0], graphs[1]


def rewire(data: Data, purity: float, seed: int) -> Data:
    """Rewire wrong-class edges to random same-class training nodes until ``purity`` of the edges are
    same-class (oracle: reads labels). Never lowers the purity."""
    gen = torch.Generator().manual_seed(seed)
    y, edges = data.y, data.edge_index.clone()
    num_train = int(data.train_mask.sum())
    wrong = (y[edges[0]] != y[edges[1]]).nonzero().flatten()
    need = int(round(purity * edges.shape[1])) - (edges.shape[1] - wrong.numel())
    if need <= 0:
        return data
    chosen = wrong[torch.randperm(wrong.numel(), generator=gen)[:need]]
    train_y = y[:num_train]
    by_class = [(train_y == c).nonzero().flatten() for c in range(int(y.max()) + 1)]
    for c, members in enumerate(by_class):
        rows = chosen[y[edges[1, chosen]] == c]
        picks = members[torch.randint(0, members.numel(), (rows.numel(),), generator=gen)]
        # a training node must not become its own neighbour
        clash = picks == edges[1, rows]
        picks[clash] = members[(torch.searchsorted(members, picks[clash]) + 1) % members.numel()]
        edges[0, rows] = picks
    return Data(x=data.x, edge_index=edges, edge_weight=torch.ones(edges.shape[1]), y=y,
                train_mask=data.train_mask, test_mask=data.test_mask, num_train=data.num_train)


def measure(x: Tensor, data: Data, probe_seeds: int) -> dict[str, float]:
    y, train, test = data.y, data.train_mask, data.test_mask
    knn = knn_accuracy(x[train], y[train], x[test], y[test], ks=[20])[20]
    probe = logistic_regression_probe(x, y, train, test, seeds=probe_seeds)
    return {"knn20": knn, "probe": probe["mean"], "probe_std": probe["std"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path)
    source.add_argument("--features", type=Path)
    parser.add_argument("--edges", type=int, default=10)
    parser.add_argument("--purities", type=float, nargs="*", default=[0.3, 0.4, 0.5, 0.6, 0.75, 0.9])
    parser.add_argument("--epochs", type=int, default=0, help="trained refinement epochs (0: skip)")
    parser.add_argument("--alpha", type=float, default=0.5, help="trained encoder's self term")
    parser.add_argument("--variance-weight", type=float, default=1.0, help="trained encoder's VICReg weight")
    parser.add_argument("--fixed", type=float, nargs=2, metavar=("ALPHA", "HOPS"), default=None,
                        help="also propagate with this fixed alpha and hop count (what the rule could pick)")
    parser.add_argument("--reuse", action="store_true",
                        help="take every curve already in --out for the same graphs, purity and settings from it "
                             "and measure only what is missing (a long sweep can be extended)")
    parser.add_argument("--probe-seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "refine_vs_purity.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "img" / "refine_vs_purity.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.run is not None:
        teacher, student = (load_graph(args.run / "graphs" / f"{s}.pt") for s in ("teacher", "student"))
    else:
        teacher, student = from_features(args.features, args.edges)
    source = str(args.run or args.features)
    trained_cfg = {"epochs": args.epochs, "encoder": "gcn", "hidden_dim": 256, "lr": 1e-3, "alpha": args.alpha,
                   "variance_weight": args.variance_weight} if args.epochs > 0 else None
    settings = {"raw": {}, "propagated": {"rule": "select_alpha"}, "trained": trained_cfg,
                "fixed": None if args.fixed is None else {"alpha": args.fixed[0], "hops": int(args.fixed[1])}}
    previous = {}
    if args.reuse and args.out.is_file():
        old = json.loads(args.out.read_text())
        if old.get("source") == source and old.get("probe_seeds") == args.probe_seeds:
            previous = {round(r["target"], 4): r for r in old["rows"]}

    def curve(row_before: dict, name: str, compute) -> dict | None:
        if settings[name] is None:
            return None
        cached = row_before.get(name)
        if cached is not None and row_before.get("settings", {}).get(name) == settings[name]:
            return cached
        return compute()

    measured = (train_purity(teacher) + train_purity(student)) / 2
    targets = [measured] + [p for p in sorted(args.purities) if p > measured + 0.01]
    raw_x = torch.cat([teacher.x, student.x], dim=1)
    raw = curve(previous.get(round(measured, 4), {}), "raw", lambda: measure(raw_x, teacher, args.probe_seeds))
    rows = []
    for index, target in enumerate(targets):
        started = time.perf_counter()
        before = previous.get(round(target, 4), {})
        t, s = (rewire(g, target, seed=index * 2 + i) for i, g in enumerate((teacher, student)))
        purity = (train_purity(t) + train_purity(s)) / 2
        row = {"target": target, "purity": purity, "raw": raw, "settings": settings}

        def rule() -> dict:
            prop = propagate_graphs(t, s, RefineConfig(encoder="appnp"))
            return {**measure(prop.embeddings, t, args.probe_seeds), "alpha": prop.alpha, "hops": prop.hops}

        def fixed() -> dict:
            cfg = RefineConfig(encoder="appnp", alpha=settings["fixed"]["alpha"], hops=settings["fixed"]["hops"])
            return measure(propagate_graphs(t, s, cfg).embeddings, t, args.probe_seeds)

        def trained() -> dict:
            cfg = RefineConfig(epochs=args.epochs, hidden_dim=256, projector_dim=256, predictor_dim=256, lr=1e-3,
                               alpha=args.alpha, variance_weight=args.variance_weight)
            return measure(refine_graphs(t, s, cfg, device=torch.device("cpu"), progress=False).embeddings, t,
                           args.probe_seeds)

        for name, compute in (("propagated", rule), ("fixed", fixed), ("trained", trained)):
            value = curve(before, name, compute)
            if value is not None:
                row[name] = value
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        parts = [f"purity {purity:5.3f}", f"raw {raw['knn20']:5.2f}/{raw['probe']:5.2f}",
                 f"rule (a={row['propagated'].get('alpha', float('nan')):g}, K={row['propagated'].get('hops')}) "
                 f"{row['propagated']['knn20']:5.2f}/{row['propagated']['probe']:5.2f}"]
        parts += [f"{name} {row[name]['knn20']:5.2f}/{row[name]['probe']:5.2f}" for name in ("fixed", "trained")
                  if name in row]
        print("  ".join(parts), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"source": source, "edges": args.edges, "probe_seeds": args.probe_seeds,
                                            "trained": trained_cfg, "fixed": settings["fixed"], "rows": rows},
                                           indent=2) + "\n")
    plot(rows, args.figure)


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    purity = [100 * r["purity"] for r in rows]
    for ax, metric, title in ((axes[0], "knn20", "kNN k=20"), (axes[1], "probe", "standardised logistic probe")):
        curves = (("raw", "raw", "tab:gray"), ("propagated", "propagated (label-free rule)", "tab:blue"),
                  ("fixed", "propagated (fixed alpha, hops)", "tab:cyan"), ("trained", "trained GCN", "tab:purple"))
        for name, label, colour in curves:
            if all(name in r for r in rows):
                if name == "fixed":
                    fixed = rows[0]["settings"]["fixed"]
                    label = f"propagated (alpha {fixed['alpha']:g}, {fixed['hops']} hops)"
                ax.plot(purity, [r[name][metric] for r in rows], marker="o", label=label, color=colour)
        ax.set_xlabel("same-class edges (%)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
