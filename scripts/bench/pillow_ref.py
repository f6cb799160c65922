"""The Pillow side of the codec benchmark (run by `imgpipe-bench codec` when Pillow is importable).

Does what imgpipe's compress does, the usual Pillow way: open from bytes, apply the EXIF orientation
(ImageOps.exif_transpose, only when the orientation is not 1), flatten alpha onto white, reduce 16-bit grey to 8 bits,
convert CMYK and palettes to RGB, save a JPEG at the given quality (Pillow's defaults: 4:2:0, standard tables, no
Huffman optimisation, no metadata). An image with an embedded ICC profile is first converted to sRGB by LittleCMS
(`ImageCms.profileToProfile`, as a colour-managed pipeline must; Pillow alone would drop the profile), whatever its
mode: palettes expanded first, alpha carried through and flattened after the conversion (as imgpipe does, and as a
browser shows it: colour-managed, then composited in sRGB). PNG gAMA/cHRM chunks without a profile are not
converted (Pillow ignores them), so such files are not scored against LittleCMS. Times the
whole of that per file, single-threaded, best of --repeat runs, and writes each output next to the others for the
quality score. For a profiled file it also writes the LittleCMS-converted pixels as a PNG (`reference`): the
benchmark scores both sides against it, since a reference that ignored the profile would score correct output below
wrong output.

usage: pillow_ref.py --serve --quality 50 --repeat 3 --out DIR
         one JSON line first ({"pillow", "libjpeg_turbo", "python"}), then for each request line on stdin
         ({"file": PATH}) one result line ({"file", "seconds", "bytes", "output", "error", "reference"}): the
         benchmark asks for one file at a time, between its own runs of the same file, so that machine load skews
         neither side
       pillow_ref.py --rss --quality 50 FILE   (one compress; prints this process's peak RSS, VmHWM, in KiB)
"""

import argparse
import io
import json
import os
import sys
import time

import PIL
from PIL import Image, ImageCms, ImageOps, features

SRGB = ImageCms.createProfile("sRGB")


def prepare(data):
    """Decoded, oriented, in sRGB, flattened, 8-bit: what gets encoded."""
    im = Image.open(io.BytesIO(data))
    icc = im.info.get("icc_profile")
    if im.getexif().get(0x0112, 1) != 1:
        im = ImageOps.exif_transpose(im)
    if icc:
        im = to_srgb(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.new("RGB", rgba.size, (255, 255, 255))
        im.paste(rgba, mask=rgba.getchannel("A"))
    elif im.mode.startswith("I"):
        im = im.point(lambda v: v * (1 / 257)).convert("L")
    elif im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    return im


# The modes LittleCMS converts for each colour space of a profile, alpha carried through (Pillow copies it). A
# palette is expanded first (ImageCms has no palette mode): before, `prepare` left palette and alpha images with a
# profile unconverted, so their reference ignored the profile and scored imgpipe's correct conversion as an error.
CONVERTS = {"RGB ": ("RGB", "RGBA"), "GRAY": ("L", "LA"), "CMYK": ("CMYK",)}


def to_srgb(im, source):
    """`im` converted to sRGB through its profile `source`; as it is when the profile is for another colour model
    than the pixels (an RGB profile on grey pixels), which imgpipe ignores too."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode.startswith("I") and source.profile.xcolor_space == "GRAY":
        im = im.point(lambda v: v * (1 / 257)).convert("L")  # no 16-bit grey transform here: at 8 bits
    modes = CONVERTS.get(source.profile.xcolor_space, ())
    if im.mode not in modes:
        return im
    if im.mode in ("L", "LA"):
        # Into sRGB's neutral greys and back to one channel (the output stays a grey JPEG, as imgpipe's); LittleCMS's
        # grey-with-alpha to RGBA would drop the alpha, so the grey is converted alone and the alpha put back.
        grey = ImageCms.profileToProfile(im.getchannel("L"), source, SRGB, outputMode="RGB").convert("L")
        if im.mode == "LA":
            grey.putalpha(im.getchannel("A"))
        return grey
    return ImageCms.profileToProfile(im, source, SRGB, outputMode="RGBA" if im.mode == "RGBA" else "RGB")


def compress(data, quality):
    im = prepare(data)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def run_one(path, quality, repeat, out):
    with open(path, "rb") as f:
        data = f.read()
    best, jpeg, error = None, b"", None
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            jpeg = compress(data, quality)
            elapsed = time.perf_counter() - t0
            best = elapsed if best is None else min(best, elapsed)
    except Exception as e:  # noqa: BLE001 - reported per file
        error = f"{type(e).__name__}: {e}"
    output = os.path.join(out, os.path.basename(path) + ".pillow.jpg")
    if error is None:
        with open(output, "wb") as f:
            f.write(jpeg)
    reference = None
    if error is None and Image.open(io.BytesIO(data)).info.get("icc_profile"):
        reference = os.path.join(out, os.path.basename(path) + ".reference.png")
        prepare(data).convert("RGB").save(reference)
    return {"file": path, "seconds": best, "bytes": len(jpeg), "output": output, "error": error, "reference": reference}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quality", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out")
    p.add_argument("--rss", action="store_true")
    p.add_argument("--serve", action="store_true")
    p.add_argument("files", nargs="*")
    a = p.parse_args()
    if a.rss:
        with open(a.files[0], "rb") as f:
            compress(f.read(), a.quality)
        # VmHWM, not getrusage's ru_maxrss: that one keeps the high-water mark of the parent it was forked from.
        with open("/proc/self/status") as f:
            print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
        return
    if not a.serve or not a.out:
        p.error("--serve --out DIR, or --rss FILE")
    os.makedirs(a.out, exist_ok=True)
    hello = {"pillow": PIL.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"), "python": sys.version.split()[0]}
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        print(json.dumps(run_one(json.loads(line)["file"], a.quality, a.repeat, a.out)), flush=True)


if __name__ == "__main__":
    main()
