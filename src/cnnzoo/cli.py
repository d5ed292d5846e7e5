"""The `cnnzoo` command: parses arguments, calls the library, prints. No logic of its own.

Errors a user can cause (:class:`cnnzoo.errors.CnnzooError`) print one line on stderr and exit
with code 2, like argparse's own usage errors; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console, JustifyMethod
from rich.table import Table

from cnnzoo.errors import EXIT_INTERRUPTED, CnnzooError, Interrupted, InvalidArgumentError
from cnnzoo.explain_cli import add_topics as add_mechanism_topics
from cnnzoo.progress import EpochProgress


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``"3x224x224"`` → ``(3, 224, 224)``; a single number is a square with 3 channels."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) == 1:
        dims = (3, dims[0], dims[0])
    if len(dims) != 3 or min(dims) < 1:
        raise InvalidArgumentError(
            f"--input {text!r} is not an input size: write CxHxW, e.g. 3x224x224."
        )
    return dims


def cmd_list(args: argparse.Namespace, console: Console) -> None:
    from cnnzoo.catalog import zoo_rows
    from cnnzoo.units import human

    rows = zoo_rows(args.family)
    if args.json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="cnnzoo models (MACs: conv + linear multiply-adds at the default input)")
    columns: list[tuple[str, JustifyMethod]] = [
        ("name", "left"), ("family", "left"), ("year", "right"), ("params", "right"),
        ("MACs", "right"), ("input", "right"), ("valid sizes", "right"),
    ]  # fmt: skip
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for r in rows:
        c, h, w = r["input_size"]
        table.add_row(
            r["name"], r["family"], str(r["year"]), f"{r['params']:,}", human(r["macs"]),
            f"{c}×{h}×{w}", r["valid_sizes"],
        )  # fmt: skip
    console.print(table)


def cmd_summary(args: argparse.Namespace, console: Console) -> None:
    from cnnzoo.analysis import check_input, render, summarize
    from cnnzoo.models import get_spec

    if args.batch_size < 1:
        raise InvalidArgumentError(f"--batch-size must be 1 or more, got {args.batch_size}.")
    if args.weights:
        if args.num_classes is not None:
            raise InvalidArgumentError(
                "--num-classes does not go with --weights: the file gives the classes."
            )
        model, name = _load_weights(args.model, args.weights)
        spec, target = get_spec(name), model
        size = parse_input_size(args.input) if args.input else model.pretrained_cfg.input_size
    else:
        if args.model is None:
            raise InvalidArgumentError("give a model name, e.g. cnnzoo summary resnet18.")
        spec = get_spec(args.model)
        target = spec.name
        size = parse_input_size(args.input) if args.input else spec.input_size
    check_input(spec.name, size)  # one line naming the layer and the valid sizes, before a pass
    result = summarize(target, size, batch_size=args.batch_size, num_classes=args.num_classes)
    result.training_memory(args.optimizer)  # an unknown optimizer fails before any output
    if args.json:
        text = render.render_json(result, args.optimizer)
    elif args.csv:
        text = render.render_csv(result).rstrip("\n")
    elif args.markdown:
        text = render.render_markdown(result, args.optimizer)
    elif args.explain:
        text = render.render_explain(result, args.optimizer)
    else:
        text = render.render_table(result, args.optimizer, width=console.width)
    console.out(text, highlight=False)


def cmd_explain(args: argparse.Namespace, console: Console) -> None:
    from cnnzoo.analysis import explain

    if getattr(args, "mechanism", None):  # conv, pool, relu, softmax, flatten, forward
        args.mechanism(args, console)
        return
    if args.topic == "bottleneck":
        result = explain.bottleneck(args.in_chans, args.mid, args.out, args.kernel)
    elif args.topic == "separable":
        result = explain.separable(args.in_chans, args.out, args.kernel, args.size)
    elif args.topic == "fc-vs-conv":
        result = explain.fc_vs_conv(args.width, args.height, args.channels, args.out, args.kernel)
    else:
        result = explain.output_size(
            args.size, args.kernel, args.stride, args.padding, args.dilation, args.ceil_mode,
            pool=args.pool,
        )  # fmt: skip
    console.print(result.text(), highlight=False, markup=False)


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="the textbook formulas, worked with your numbers")
    topics = p.add_subparsers(dest="topic", required=True)
    t = topics.add_parser("bottleneck", help="a K×K convolution with and without a 1×1 reduction")
    t.add_argument("--in", dest="in_chans", type=int, default=32, help="input channels (32)")
    t.add_argument("--mid", type=int, default=16, help="channels after the 1×1 reduction (16)")
    t.add_argument("--out", type=int, default=64, help="output channels (64)")
    t.add_argument("--kernel", type=int, default=3, help="kernel side (3)")
    t = topics.add_parser("separable", help="depthwise-separable vs standard convolution")
    t.add_argument("--in", dest="in_chans", type=int, default=512, help="input channels M (512)")
    t.add_argument("--out", type=int, default=512, help="output channels N (512)")
    t.add_argument("--kernel", type=int, default=3, help="kernel side D_K (3)")
    t.add_argument("--size", type=int, default=14, help="output side D_F (14)")
    t = topics.add_parser("fc-vs-conv", help="a dense layer on an image vs a convolution")
    t.add_argument("--width", type=int, default=224, help="image width (224)")
    t.add_argument("--height", type=int, default=224, help="image height (224)")
    t.add_argument("--channels", type=int, default=3, help="image channels (3)")
    t.add_argument("--out", type=int, default=96, help="units / filters (96)")
    t.add_argument("--kernel", type=int, default=11, help="filter side (11)")
    t = topics.add_parser("output-size", help="output side of a convolution or pooling layer")
    t.add_argument("--size", type=int, default=224, help="input side W (224)")
    t.add_argument("--kernel", type=int, default=11, help="kernel side F (11)")
    t.add_argument("--stride", type=int, default=4, help="stride S (4)")
    t.add_argument("--padding", type=int, default=2, help="padding P (2)")
    t.add_argument("--dilation", type=int, default=1, help="dilation D (1)")
    t.add_argument("--ceil-mode", action="store_true", help="round up, as pooling can")
    t.add_argument("--pool", action="store_true", help="a pooling layer (implied by --ceil-mode)")
    add_mechanism_topics(topics)
    p.set_defaults(func=cmd_explain)


def cmd_train(args: argparse.Namespace, console: Console) -> int | None:
    from dataclasses import fields

    from cnnzoo.training.config import TrainConfig, read_config_file
    from cnnzoo.training.resume import resume_options
    from cnnzoo.training.signals import resume_command
    from cnnzoo.training.trainer import fit

    options = read_config_file(args.config) if args.config else {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            options[f.name] = value
    if options.get("resume"):  # options left out are the run's own
        options = resume_options(options.get("out", TrainConfig.out), options)
    config = TrainConfig(**options)
    result = fit(config, argv=sys.argv, reporter=EpochProgress(console, config.quiet))
    if result.interrupted is not None:  # a signal: the checkpoint is written; say how to go on
        if result.main_process:
            command = resume_command(args.argv, result.world_size)
            print(
                f"stopped by {result.interrupted}; checkpoint {result.out / 'last.pt'}; "
                f"resume with: {command}",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED
    if result.main_process and not config.quiet:
        final = result.final
        console.print(
            f"final validation accuracy {100 * final['val_acc']:.2f}% after epoch "
            f"{final['epoch']}; weights, metrics, curves.png and confusion.png in {result.out}",
            highlight=False,
        )
    return None


def _add_train(sub: argparse._SubParsersAction) -> None:
    from cnnzoo.choices import AUGMENTS, DEVICES, OPTIMIZERS, SCHEDULES
    from cnnzoo.training.config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a zoo model on the built-in digits or your data")
    p.add_argument("--config", help="a TOML file with any of these options (the flags win)")
    p.add_argument("--model", help=f"registry name ({d.model})")
    p.add_argument(
        "--dataset", help="digits (built in), mnist, fashion-mnist, cifar10, cifar100 or "
        f"imagefolder:PATH ({d.dataset})",
    )  # fmt: skip
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--download", action="store_true", default=None, help="fetch a dataset")
    p.add_argument("--epochs", type=int, help=f"({d.epochs})")
    p.add_argument("--batch-size", type=int, help=f"global batch size ({d.batch_size})")
    p.add_argument("--optimizer", help=f"{', '.join(OPTIMIZERS)} ({d.optimizer})")
    p.add_argument("--lr", type=float, help=f"learning rate ({d.lr})")
    p.add_argument(
        "--momentum", type=float, help=f"for the momentum and nesterov optimizers ({d.momentum})"
    )
    p.add_argument(
        "--weight-decay", type=float, help=f"never on norm layers or biases ({d.weight_decay})"
    )
    p.add_argument("--schedule", help=f"{', '.join(SCHEDULES)} ({d.schedule})")
    p.add_argument("--warmup", type=float, help="linear warm-up epochs (1)")
    p.add_argument("--label-smoothing", type=float, help=f"({d.label_smoothing})")
    p.add_argument("--augment", help=f"{', '.join(AUGMENTS)} ({d.augment})")
    p.add_argument("--dropout", type=float, help="the model's dropout rate (its default)")
    p.add_argument("--image-size", type=int, help="resize images to this side")
    p.add_argument("--seed", type=int, help=f"({d.seed})")
    p.add_argument(
        "--val-fraction", type=float, help="share of each class an image folder validates on (0.2)"
    )
    p.add_argument(
        "--deterministic", action="store_true", default=None, help="bitwise-repeatable runs"
    )
    p.add_argument("--device", help=f"{', '.join(DEVICES)} ({d.device})")
    p.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None,
        help="bfloat16 autocast, training and validation (CPUs with avx512_bf16/AMX, GPUs)",
    )  # fmt: skip
    p.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile")
    p.add_argument("--out", help=f"output folder ({d.out})")
    p.add_argument(
        "--resume", nargs="?", const=True, default=None, metavar="auto",
        help="continue --out's run; with auto, also start it when --out holds none (torchrun "
        "restarts)",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint-every", type=int, help="also checkpoint every N steps, mid-epoch (0: off)"
    )
    p.add_argument(
        "--epoch-checkpoints", action=argparse.BooleanOptionalAction, default=None,
        help="write last.pt/best.pt after every epoch (on; --no-epoch-checkpoints: the final "
        "weights and a signal's checkpoint only)",
    )  # fmt: skip
    p.add_argument("--num-workers", type=int, help=f"data-loading processes ({d.num_workers})")
    p.add_argument("--quiet", action="store_true", default=None, help="print errors only")
    p.add_argument("--weights", help="start from this weight file (docs/weights.md)")
    p.add_argument("--freeze", help="none, backbone or stages:K (the first K stages) (none)")
    p.add_argument("--head-lr", type=float, help="learning rate of the classifier (--lr)")
    p.set_defaults(func=cmd_train)


def _load_weights(model_name: str | None, path: str):
    """Load a weight file for inference, printing the load report on stderr (stdout stays
    clean for --json)."""
    from cnnzoo.weights import load_weights

    model, report = load_weights(model_name, path)
    print("\n".join(report.lines()), file=sys.stderr)
    return model, report.model


def _add_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="a weight file (docs/weights.md)")
    p.add_argument(
        "--model", help="registry name, for files that do not name their architecture "
        "(torchvision and timm files)",
    )  # fmt: skip


def _backend(args: argparse.Namespace) -> str:
    """``--backend`` as given; when not given, auto for a reduced ``--precision``, else eager."""
    if args.backend is not None:
        return args.backend
    return "auto" if args.precision in ("bf16", "int8") else "eager"


def _precision(args: argparse.Namespace) -> str:
    """The precision the command runs in: ``--precision``, else the backend's own."""
    from cnnzoo.choices import ENGINE_PRECISION

    return args.precision or ENGINE_PRECISION.get(_backend(args), "fp32")


def _needs_int8(args: argparse.Namespace) -> bool:
    return _precision(args) == "int8"


def _with_backend(args: argparse.Namespace, model, name: str, calibration=None):
    """The model, or a fast runner of it in its place (``--backend``, ``--precision``,
    docs/inference.md)."""
    backend = _backend(args)
    if backend == "eager" and args.precision in (None, "fp32"):
        return model
    import torch

    from cnnzoo.inference import RunnerModule, optimize

    # auto tunes for this batch; any batch size runs afterwards.
    example = torch.randn(min(args.batch_size, 8), *model.pretrained_cfg.input_size)
    runner = optimize(
        model, backend, precision=args.precision, example_input=example, threads=args.threads,
        model_name=name, calibration=calibration,
    )  # fmt: skip
    print(f"backend {runner.describe()}", file=sys.stderr)
    return RunnerModule(runner, model)


def _calibration_images(dataset: str, root: str | None, pre) -> object:
    from cnnzoo.data import load_dataset
    from cnnzoo.inference import calibration_images

    train = load_dataset(dataset, root=root, preprocessing=pre).train  # never augmented here
    return calibration_images(train)


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    from cnnzoo.predict import predict_files

    if args.topk < 1:
        raise InvalidArgumentError(f"--topk must be 1 or more, got {args.topk}.")
    if _needs_int8(args) and not args.calibrate:
        what = "--precision int8" if args.precision == "int8" else f"--backend {args.backend}"
        raise InvalidArgumentError(
            f"{what} needs calibration images: add --calibrate DATASET (its training "
            "images, prepared as the weights ask)."
        )
    model, name = _load_weights(args.model, args.weights)
    calibration = None
    if args.calibrate:
        calibration = _calibration_images(args.calibrate, None, model.pretrained_cfg)
    model = _with_backend(args, model, name, calibration)
    result = predict_files(model, args.images, topk=args.topk, batch_size=args.batch_size)
    if args.json:
        console.print_json(json.dumps(result.to_dict()))
    else:
        out = [f"preprocessing: {result.transform}", *result.lines()]
        out += [f"note: {note}" for note in result.notes]
        console.out("\n".join(out), highlight=False)
    for _, message in result.failures:
        print(f"cnnzoo predict: error: {message}", file=sys.stderr)
    if result.failures:
        print(f"cnnzoo predict: {result.failure_summary()}.", file=sys.stderr)
        return 2
    return 0


def cmd_eval(args: argparse.Namespace, console: Console) -> None:
    from pathlib import Path

    from cnnzoo.data import load_dataset
    from cnnzoo.evaluate import evaluate

    model, name = _load_weights(args.model, args.weights)
    pre = model.pretrained_cfg
    data = load_dataset(args.dataset, root=args.data_root, preprocessing=pre)
    if data.num_classes != model.num_classes:
        raise InvalidArgumentError(
            f"the weights have {model.num_classes} classes, {args.dataset} has "
            f"{data.num_classes}: evaluate on data with the weights' classes."
        )
    notes = [f"preprocessing: {pre.describe()}"]
    if pre.class_names and list(pre.class_names) != list(data.class_names):
        notes.append(
            f"class names differ (weights {', '.join(pre.class_names[:3])}, … vs data "
            f"{', '.join(data.class_names[:3])}, …): labels are matched by index"
        )
    calibration = None
    if _precision(args) != "fp32":  # int8 calibrates on them; bf16 measures its change on them
        calibration = _calibration_images(args.dataset, args.data_root, pre)
    runner = _with_backend(args, model, name, calibration)
    # Reduced precision changes the outputs: it is measured against the fp32 model too.
    precision = getattr(getattr(runner, "runner", None), "precision", "fp32")
    reference = model if precision != "fp32" else None
    result = evaluate(
        runner, data.val, num_classes=data.num_classes, class_names=list(data.class_names),
        batch_size=args.batch_size, reference=reference,
    )  # fmt: skip
    if reference is not None:
        notes.append(result.comparison(precision, "fp32"))
    picture = None
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        picture = folder / "confusion.png"
        result.save_confusion(picture, title=f"{name} on {args.dataset} (validation)")
    if args.json:
        console.print_json(json.dumps(result.to_dict() | {"notes": notes}))
        return
    lines = [*(f"note: {n}" for n in notes), *result.lines()]
    if picture is not None:
        lines.append(f"confusion matrix: {picture}")
    console.out("\n".join(lines), highlight=False)


def cmd_export(args: argparse.Namespace, console: Console) -> None:
    from cnnzoo.export import check_images, export_model

    if args.check_images < 1:
        raise InvalidArgumentError(f"--check-images must be 1 or more, got {args.check_images}.")
    model, name = _load_weights(args.model, args.weights)
    size = parse_input_size(args.input) if args.input else model.pretrained_cfg.input_size
    real = None
    if args.dataset != "none":
        real = check_images(
            model.pretrained_cfg, args.dataset, root=args.data_root, count=args.check_images,
            input_size=size,
        )  # fmt: skip
    report = export_model(
        model, args.out, args.format, input_size=size, real_inputs=real, model_name=name
    )
    if args.json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        console.out("\n".join(report.lines()), highlight=False)


def _add_backend_arguments(p: argparse.ArgumentParser) -> None:
    from cnnzoo.choices import BACKENDS, PRECISIONS

    p.add_argument(
        "--backend", choices=BACKENDS,
        help="how to run the model (docs/inference.md): auto measures and keeps the fastest "
        "(eager; auto with a reduced --precision)",
    )  # fmt: skip
    p.add_argument(
        "--precision", choices=PRECISIONS,
        help="arithmetic: fp32 (default), or bf16/int8, whose change against fp32 is reported",
    )  # fmt: skip
    p.add_argument("--threads", type=int, help="intra-op threads (torch's default)")


def _add_inference(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-k classes of image files from a weight file")
    _add_weights_arguments(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files (any mode)")
    p.add_argument("--topk", type=int, default=5, help="classes shown per image (5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (32)")
    p.add_argument("--json", action="store_true", help="machine-readable (docs/predict.md)")
    _add_backend_arguments(p)
    p.add_argument(
        "--calibrate", help="dataset whose training images calibrate int8 (--backend int8, "
        "openvino_int8 or --precision int8) and measure bf16's and int8's change",
    )  # fmt: skip
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("eval", help="top-1, top-5, per-class accuracy and confusion matrix")
    _add_weights_arguments(p)
    p.add_argument("--dataset", required=True, help="as for train: digits, imagefolder:PATH, ...")
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (256)")
    p.add_argument("--out", help="folder for confusion.png")
    p.add_argument("--json", action="store_true", help="machine-readable (docs/predict.md)")
    _add_backend_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="ONNX or TorchScript file, checked against the model")
    _add_weights_arguments(p)
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, help="the file to write (replaced only once checked)")
    p.add_argument("--input", help="input size CxHxW (default: the weights')")
    p.add_argument(
        "--dataset", help="real images for the parity check, prepared as the weights ask: "
        "digits, imagefolder:PATH, ... or none (the dataset the weights were trained on; digits "
        "when they name none or it is not here)",
    )  # fmt: skip
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--check-images", type=int, default=32, help="real images checked (32)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=cmd_export)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise InvalidArgumentError(
            f"{flag} {text!r} is not a list of positive numbers, e.g. 1,8,32."
        )
    return values


def cmd_bench(args: argparse.Namespace, console: Console) -> None:
    from pathlib import Path

    from cnnzoo.bench import run_bench
    from cnnzoo.fileio import atomic_write_text
    from cnnzoo.models import list_models
    from cnnzoo.units import human

    if bool(args.all) == bool(args.models):
        raise InvalidArgumentError("give --models a,b,... or --all (one of them).")
    models = list_models() if args.all else [m.strip() for m in args.models.split(",") if m]
    size = None if args.image_size == "native" else _int_list(args.image_size, "--image-size")[0]
    if args.json and not Path(args.json).parent.is_dir():
        raise InvalidArgumentError(f"--json {args.json}: the folder does not exist.")
    result = run_bench(
        models, [b.strip() for b in args.backends.split(",") if b.strip()],
        _int_list(args.batch_sizes, "--batch-sizes"), image_size=size, threads=args.threads,
        rounds=args.rounds, memory=not args.no_memory,
        progress=lambda line: print(line, file=sys.stderr), precision=args.precision,
    )  # fmt: skip
    m = result.machine
    console.print(
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads; torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, python {m['python']}",
        highlight=False,
    )
    table = Table(title="latency per batch (ms), throughput, memory, achieved GFLOP/s")
    for col in ("model", "backend", "batch", "input", "p50 ms", "p90 ms", "img/s", "peak MB",
                "calls MB", "params", "MACs", "GFLOP/s"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("model", "backend") else "right")
    for r in result.rows:
        backend = r.backend if r.picked == r.backend else f"{r.backend} → {r.picked}"
        memory = [f"{r.peak_rss_mb:.0f}", f"{r.calls_rss_mb:.0f}"] if r.peak_rss_mb else ["", ""]
        table.add_row(
            r.model, backend, str(r.batch), "×".join(map(str, r.input_size)),
            f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.throughput:.1f}", *memory,
            f"{r.params:,}", human(r.macs), f"{r.gflops:.1f}",
        )  # fmt: skip
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    for r in result.rows:
        if r.accuracy:
            console.print(
                f"note: {r.model} {r.picked} batch {r.batch}: {r.accuracy}", highlight=False
            )
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result.to_dict(), indent=2))
        console.print(f"results in {args.json}", highlight=False)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from cnnzoo.choices import PRECISIONS

    p = sub.add_parser("bench", help="latency, throughput and memory per backend, on this machine")
    p.add_argument("--models", help="registry names, comma-separated")
    p.add_argument("--all", action="store_true", help="every model in the zoo")
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated (1,8)")
    p.add_argument("--backends", default="eager,auto", help="comma-separated (eager,auto)")
    p.add_argument("--image-size", default="native", help="native (each model's own) or N")
    p.add_argument("--threads", type=int, help="intra-op threads (torch's default)")
    p.add_argument("--rounds", type=int, default=10, help="timed calls per row (10)")
    p.add_argument(
        "--precision", default="fp32", choices=PRECISIONS,
        help="what auto rows measure: fp32 (default), or bf16/int8 (change against fp32 noted)",
    )  # fmt: skip
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--json", help="write the results to this file")
    p.set_defaults(func=cmd_bench)


class _Version(argparse.Action):
    """``--version``: read from package metadata when asked, not on every parse."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> NoReturn:
        from cnnzoo.version import version_text

        print(version_text())
        parser.exit(0)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit code 2), like every other."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from cnnzoo.compare.cli import add_parser as add_compare
    from cnnzoo.explore.cli import add_parser as add_explore
    from cnnzoo.scratch.cli import add_parser as add_scratch_train
    from cnnzoo.visualize.cli import add_parser as add_visualize
    from cnnzoo.visualize.optimizers.cli import add_parser as add_optimizers

    parser = _Parser(
        prog="cnnzoo", description="The classic CNNs: built, explained, trained and compared."
    )
    parser.add_argument(
        "--version", action=_Version, help="cnnzoo's version and its libraries', then exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the zoo: every model with its size, cost and valid inputs")
    p.add_argument("--family", help="only this family, e.g. resnet")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "summary", help="one model's layers: shapes, parameters, MACs, memory, receptive field"
    )
    p.add_argument(
        "model", nargs="?", help="registry name, e.g. lenet5 (see `cnnzoo list`); with "
        "--weights only where the file does not name its architecture",
    )  # fmt: skip
    p.add_argument("--weights", help="the model as loaded from this weight file")
    p.add_argument("--input", help="input size CxHxW (default: the model's own)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs")
    p.add_argument("--batch-size", type=int, default=1, help="images per batch (1)")
    p.add_argument("--optimizer", default="adam", help="for the training-memory estimate (adam)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable (docs/analyzer.md)")
    fmt.add_argument("--csv", action="store_true", help="one row per layer")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown table")
    fmt.add_argument(
        "--explain", action="store_true", help="each layer's formulas with the numbers in"
    )
    p.set_defaults(func=cmd_summary)

    _add_explain(sub)
    _add_train(sub)
    _add_inference(sub)
    _add_bench(sub)
    add_compare(sub)
    add_scratch_train(sub)
    add_optimizers(sub)
    add_visualize(sub)
    add_explore(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    program = argv is None  # the process itself, not a caller (tests, scripts)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # a return code, as for every command (argparse would exit)
        from cnnzoo.version import version_text

        print(version_text())
        return 0
    # The parser imports no torch (its choices come from cnnzoo.choices): --help, --version and
    # every usage error answer at once, and even where torch is broken.
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as typed, for what records it (compare's report)
    # Off a terminal (a pipe, a file, CI logs) rich would wrap tables at 80 columns.
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    try:
        code = args.func(args, console)
    except CnnzooError as err:
        print(f"cnnzoo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:  # a signal stopped a run inside the command (compare)
        print(f"cnnzoo {args.command}: {err}", file=sys.stderr)
        code = EXIT_INTERRUPTED
    if program:
        _exit_now_if_interrupted(code)
    return code or 0


def _exit_now_if_interrupted(code: int | None) -> None:
    """A run stopped by a signal exits at once: a preempted job has seconds left (the
    scheduler's grace period), everything that matters is on disk and fsynced, and the
    interpreter's teardown of torch alone takes seconds on a busy machine. Only when ``main``
    is the program (a caller passing ``argv`` gets the code back)."""
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
