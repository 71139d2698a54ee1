"""sagepose translate fit --source A --target B --predictions P.json --labels L.json --out T.pt [--epochs N]
[--seed S] [--midpoints] [--copy-covered] [--no-affine-base] [--augment-rotate DEG] [--augment-flip P]
sagepose translate apply T.pt --predictions P.json --out Q.json
sagepose translate apply --fixed --source A --target B [--midpoints] --predictions P.json --out Q.json

Keypoints predicted in schema A as schema B's (:mod:`sagepose.translate`): ``fit`` trains a learned translator on
images labeled in B (L.json) with a model's predictions in A on them (P.json); ``apply`` translates a results json
with it, or with the fixed converter (``--fixed``: copies, and with ``--midpoints`` midpoints, of the joints that
correspond). Schemas: built-in names or schema files.
"""
from __future__ import annotations

ACTIONS = ("fit", "apply")


def add_arguments(p):
    p.add_argument("action", choices=ACTIONS, help="fit: train a translator; apply: translate a results json")
    p.add_argument("translator", nargs="?", default=None, metavar="T.pt", help="apply: the translator file")
    p.add_argument("--predictions", required=True, metavar="P.json", help="COCO results in the source schema")
    p.add_argument("--out", required=True, metavar="OUT", help="fit: translator file; apply: results json")
    p.add_argument("--labels", default=None, metavar="L.json", help="fit: COCO keypoint json in the target schema")
    p.add_argument("--source", default=None, help="source schema: a built-in name or a schema file")
    p.add_argument("--target", default=None, help="target schema: a built-in name or a schema file")
    p.add_argument("--fixed", action="store_true", help="apply: the fixed converter instead of a translator")
    p.add_argument("--midpoints", action="store_true",
                   help="the fixed map places midpoint joints (MPII pelvis / thorax, AIC neck); fit: under the "
                        "residual")
    p.add_argument("--epochs", type=int, default=None, help="fit: training epochs (default TranslatorConfig's)")
    p.add_argument("--seed", type=int, default=None, help="fit: seed (default TranslatorConfig's)")
    p.add_argument("--copy-covered", action="store_true",
                   help="fit: copy the joints the fixed map gives (conventions that agree) and learn only the others")
    p.add_argument("--no-affine-base", action="store_true",
                   help="fit: the joints the fixed map does not give start from nothing, not from a fitted affine "
                        "combination of the source joints")
    p.add_argument("--augment-rotate", type=float, default=None, metavar="DEG",
                   help="fit: turn each batch's pairs by up to +-DEG degrees (source and target together)")
    p.add_argument("--augment-flip", type=float, default=None, metavar="P",
                   help="fit: mirror pairs with probability P (left / right joints swapped)")


def _require(args, names: tuple[str, ...], what: str) -> None:
    from sagepose.config import ConfigError

    missing = [f"--{n}" for n in names if getattr(args, n) is None]
    if missing:
        raise ConfigError(f"translate {what} needs {', '.join(missing)}")


def run(args) -> int:
    import dataclasses

    from sagepose.config import ConfigError
    from sagepose.data.coco import read_json
    from sagepose.fileio import write_json_atomic
    from sagepose.keypoint_maps import keypoint_map
    from sagepose.keypoints import load_schema
    from sagepose.translate.config import TranslatorConfig
    from sagepose.translate.files import load_translator, save_translator
    from sagepose.translate.model import translate_results
    from sagepose.translate.results import convert_results

    predictions = read_json(args.predictions)
    if args.action == "fit":
        _require(args, ("source", "target", "labels"), "fit")
        if args.translator is not None or args.fixed:
            raise ConfigError("translate fit takes no translator file and no --fixed (those are for apply)")
        changes = {k: getattr(args, k) for k in ("epochs", "seed", "augment_rotate", "augment_flip")
                   if getattr(args, k) is not None}
        if args.copy_covered:
            changes["refine_covered"] = False
        if args.no_affine_base:
            changes["affine_base"] = False
        cfg = dataclasses.replace(TranslatorConfig(), **changes)
        if cfg.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {cfg.epochs}")
        if not (0 <= cfg.augment_flip <= 1 and 0 <= cfg.augment_rotate <= 180):
            raise ConfigError(f"--augment-flip must be in [0, 1] and --augment-rotate in [0, 180], got "
                              f"{cfg.augment_flip} and {cfg.augment_rotate}")
        source, target = load_schema(args.source), load_schema(args.target)
        from sagepose.translate.fit import fit_translator  # Lightning: imported for fitting only

        model, report = fit_translator(predictions, args.labels, source, target, cfg, midpoints=args.midpoints,
                                       where=args.predictions)
        out = save_translator(args.out, model, cfg, source, target, report)
        print(f"{out}: translator {source.name} -> {target.name} fit on {report['pairs']} pairs "
              f"({report['unmatched']} annotations unmatched, {sum(report['skipped'].values())} skipped), "
              f"{report['steps']} steps, final loss {report['final_loss']:.4f}, mean error {report['train_error']:.4f} "
              f"of the box (fixed map {report['fixed_error']:.4f} on the joints it gives)")
        return 0
    if args.fixed:
        _require(args, ("source", "target"), "apply --fixed")
        if args.translator is not None:
            raise ConfigError("translate apply: give a translator file or --fixed, not both")
        kmap = keypoint_map(load_schema(args.source), load_schema(args.target), midpoints=args.midpoints)
        rows = convert_results(predictions, kmap, where=args.predictions)
        how = f"fixed map, {int(kmap.covered.sum())} of {kmap.target.num_keypoints} joints given"
    else:
        if args.translator is None:
            raise ConfigError("translate apply needs a translator file (T.pt) or --fixed --source A --target B")
        if args.source or args.target or args.midpoints:
            raise ConfigError("translate apply T.pt: the translator file holds its schemas and map; "
                              "--source / --target / --midpoints are for --fixed")
        model = load_translator(args.translator)
        rows = translate_results(model, predictions, where=args.predictions)
        kmap = model.kmap
        how = f"translator {args.translator}"
    out = write_json_atomic(args.out, rows)
    print(f"{out}: {len(rows)} results {kmap.source.name} -> {kmap.target.name} ({how})")
    return 0
