"""Per-epoch speed: the tutorials' loop (a, ``plain_loop``) against mnist_lit's ``Trainer.fit`` (b, ``trainer_fit``).

    python -m bench.speed                          # one epoch of each tutorial network, seeds 0–4: bench/RESULTS.md
    python -m bench.speed --only mlp --seeds 0 --variants-for --out /tmp/S.md   # a smoke run, no variants
"""

import statistics

from bench.common import arguments, fresh, header, mean_sd, option, table, write

NETS = ["mlp", "lenet5", "lenet", "cnn3block", "bncnn"]
VARIANTS = {"`--model.channels_last false`": {"channels_last": False},
            "`--trainer.precision bf16-mixed`": {"precision": "bf16-mixed"},
            "`torch.compile` of the network": {"compile_net": True}}


def main() -> None:
    opts = arguments(__doc__, option("--only", nargs="*", default=NETS), option("--epochs", type=int, default=1),
                     option("--variants-for", nargs="*", default=["mlp", "lenet5", "cnn3block"], help="(b)'s variants"),
                     option("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4]), out="RESULTS.md")
    seeds, run = opts.seeds, {"epochs": opts.epochs, "data_dir": opts.data_dir}
    lines = header(
        "Speed: the tutorials' loop (a) against mnist_lit (b)",
        f"{opts.epochs} epoch(s) per run; seeds {', '.join(map(str, seeds))}, one run of each side per seed, a and b "
        "alternating. Times, samples/s and b/a: the median run. Test accuracy: mean ± sd over the seeds. b − a: the "
        "seed-by-seed difference in test accuracy (points), mean ± its standard error. (a) trains on all 60,000 "
        "images, as the tutorials do; (b) on the 55,000 of the training split less each epoch's last, partial batch.",
    ) + table("network", "a s/epoch", "b s/epoch", "b/a", "a samples/s", "b samples/s", "a peak RSS", "b peak RSS",
              "a test acc", "b test acc", "b − a")
    variants = []
    for net in opts.only:
        a, b = [], []
        for seed in seeds:
            a.append(fresh("bench.common:plain_loop", name=net, seed=seed, **run))
            b.append(fresh("bench.common:trainer_fit", name=net, seed=seed, **run))
            print(net, seed, f"a {a[-1]['seconds']:.1f} s, b {b[-1]['seconds']:.1f} s", flush=True)
        sa, sb = (statistics.median(r["seconds"] for r in runs) for runs in (a, b))
        lines.append(f"| {net} | {sa / opts.epochs:.1f} | {sb / opts.epochs:.1f} | **{sb / sa:.3f}** "
                     f"| {a[0]['samples'] / sa:,.0f} | {b[0]['samples'] / sb:,.0f} "
                     f"| {max(r['rss_mb'] for r in a):,.0f} MB | {max(r['rss_mb'] for r in b):,.0f} MB "
                     f"| {mean_sd([r['acc'] for r in a], 100)} % | {mean_sd([r['acc'] for r in b], 100)} % "
                     f"| {mean_sd([rb['acc'] - ra['acc'] for ra, rb in zip(a, b)], 100, sign='+', se=True)} |")
        if net in opts.variants_for:
            variants += [(net, label, b[0], fresh("bench.common:trainer_fit", name=net, seed=seeds[0], **run, **v))
                         for label, v in VARIANTS.items()]
    if variants:
        lines += ["", f"(b)'s variants, seed {seeds[0]} (ratio: the variant's time over (b)'s; < 1 is faster):", "",
                  *table("network", "variant", "b s/epoch", "variant s/epoch", "ratio", "variant test acc")]
        lines += [f"| {net} | {label} | {b['seconds'] / opts.epochs:.1f} | {v['seconds'] / opts.epochs:.1f} "
                  f"| **{v['seconds'] / b['seconds']:.2f}** | {100 * v['acc']:.2f} % |"
                  for net, label, b, v in variants]
    write(opts.out, lines)


if __name__ == "__main__":
    main()
