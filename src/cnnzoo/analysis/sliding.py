"""The sliding kernel as pictures: one frame per output cell of a :class:`ConvWalkthrough`,
written as an animated GIF or as a grid of frames in one PNG (``cnnzoo explain conv --gif``,
``--frames``).

Each frame shows every input channel with its zero padding (shaded), the cells the kernel reads
for this output value (taps D apart with dilation) and the window's extent outlined, the kernel,
and the feature map filling in up to this cell, with the sum written out beneath. Drawn with
Pillow alone: no network, no display, the same pixels on every machine that has the font.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cnnzoo.analysis.mechanism import ConvWalkthrough, num
from cnnzoo.fileio import atomic_write_bytes

MAX_FRAMES = 64  # cells drawn; a larger map shows its first 64 cells (the text says so)
FRAME_MS = 700
_BG, _INK, _PAD, _READ, _EDGE, _DONE, _NOW = (
    "white", "#222222", "#e6e6e6", "#ffd76e", "#d1495b", "#cfe3f7", "#7fb3e6",
)  # fmt: skip


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """matplotlib's bundled DejaVu Sans (it is a dependency), else Pillow's own bitmap font."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def frame_count(walk: ConvWalkthrough) -> int:
    """How many frames :func:`conv_frames` draws: one per output cell, at most MAX_FRAMES."""
    return min(len(walk.cells), MAX_FRAMES)


def conv_frames(walk: ConvWalkthrough) -> list[Image.Image]:
    """One RGB frame per output cell (the first :data:`MAX_FRAMES`), in reading order."""
    c, h, w = walk.input_shape
    _, kh, kw = walk.kernel_shape
    oh, ow = walk.output_shape
    p = walk.padding
    ph, pw = h + 2 * p, w + 2 * p
    # Cells large enough for their numbers on the textbook sizes, smaller for big inputs.
    cell = max(6, min(34, 420 // max(ph, pw, 1)))
    numbers = cell >= 20
    font = _font(max(9, cell * 4 // 10))
    text_font = _font(14)
    margin, gap, title = 16, 24, 22
    panels = [(pw, ph)] * c + [(kw, kh)] * c + [(ow, oh)]
    # Every panel at least as wide as its title (90 px).
    width = margin * 2 + sum(max(pw_ * cell, 90) for pw_, _ in panels) + gap * (len(panels) - 1)
    height = margin * 2 + title + max(ph_ * cell for _, ph_ in panels) + 60
    frames = []
    for index, current in enumerate(walk.cells[:MAX_FRAMES]):
        img = Image.new("RGB", (width, height), _BG)
        draw = ImageDraw.Draw(img)
        x0 = margin
        top = margin + title
        read_rows = [r + p for r in current.rows]
        read_cols = [col + p for col in current.cols]
        for ch in range(c):
            label = f"input ch {ch} (padded)" if c > 1 else "input (zero-padded)" if p else "input"
            draw.text((x0, margin), label, fill=_INK, font=text_font)
            padded = walk.padded(ch)
            for i in range(ph):
                for j in range(pw):
                    box = (x0 + j * cell, top + i * cell, x0 + (j + 1) * cell, top + (i + 1) * cell)
                    inside = p <= i < p + h and p <= j < p + w
                    fill = _READ if i in read_rows and j in read_cols else None
                    draw.rectangle(box, fill=fill or (_BG if inside else _PAD), outline="#bbbbbb")
                    if numbers:
                        _centre(draw, box, num(padded[i][j]), font)
            r0, c0 = read_rows[0], read_cols[0]
            r1, c1 = read_rows[-1] + 1, read_cols[-1] + 1
            draw.rectangle(
                (x0 + c0 * cell, top + r0 * cell, x0 + c1 * cell, top + r1 * cell),
                outline=_EDGE, width=3,
            )  # fmt: skip
            x0 += max(pw * cell, 90) + gap
        for ch in range(c):
            draw.text((x0, margin), f"kernel ch {ch}" if c > 1 else "kernel", fill=_INK,
                      font=text_font)  # fmt: skip
            for i in range(kh):
                for j in range(kw):
                    box = (x0 + j * cell, top + i * cell, x0 + (j + 1) * cell, top + (i + 1) * cell)
                    draw.rectangle(box, fill=_READ, outline="#999999")
                    if numbers:
                        _centre(draw, box, num(walk.kernel[ch][i][j]), font)
            x0 += max(kw * cell, 90) + gap
        draw.text((x0, margin), "feature map", fill=_INK, font=text_font)
        for n, done in enumerate(walk.cells[: oh * ow]):
            i, j = done.row, done.col
            box = (x0 + j * cell, top + i * cell, x0 + (j + 1) * cell, top + (i + 1) * cell)
            fill = _NOW if n == index else _DONE if n < index else _BG
            draw.rectangle(box, fill=fill, outline="#999999")
            if numbers and n <= index:
                _centre(draw, box, num(done.result), font)
        sums = " + ".join(num(s) for s in current.channel_sums)
        caption = (
            f"out[{current.row}, {current.col}] = Σ window ⊙ kernel + bias = {sums} + "
            f"({num(current.bias)}) = {num(current.result)}"
        )
        draw.text((margin, height - 48), caption, fill=_INK, font=text_font)
        draw.text(
            (margin, height - 26),
            f"frame {index + 1} of {frame_count(walk)}; stride {walk.stride}, padding {p}, "
            f"dilation {walk.dilation}",
            fill="#666666", font=text_font,
        )  # fmt: skip
        frames.append(img)
    return frames


def _centre(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str,
            font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> None:  # fmt: skip
    x = (box[0] + box[2]) / 2
    y = (box[1] + box[3]) / 2
    draw.text((x, y), text, fill=_INK, font=font, anchor="mm")


def save_gif(walk: ConvWalkthrough, path: str | Path) -> int:
    """The frames as an animated GIF (looping, the last frame held longer); returns the count."""
    import io

    frames = conv_frames(walk)
    durations = [FRAME_MS] * (len(frames) - 1) + [FRAME_MS * 4]
    buffer = io.BytesIO()
    # disposal=1 and no optimize: Pillow would otherwise merge frames it finds identical.
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations,
        loop=0, disposal=1, optimize=False,
    )  # fmt: skip
    atomic_write_bytes(Path(path), buffer.getvalue())
    return len(frames)


def save_frame_grid(walk: ConvWalkthrough, path: str | Path) -> int:
    """The frames tiled in one PNG, row by row (⌈√n⌉ columns); returns the count."""
    import io

    frames = conv_frames(walk)
    cols = math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / cols)
    fw, fh = frames[0].size
    sheet = Image.new("RGB", (cols * fw, rows * fh), _BG)
    for n, frame in enumerate(frames):
        sheet.paste(frame, ((n % cols) * fw, (n // cols) * fh))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return len(frames)
