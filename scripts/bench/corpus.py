"""Builds the codec benchmark's corpus from photos that packages ship (run by scripts/bench/corpus.sh).

Sources: the largest image of a few photographic wallpapers of Debian's plasma-workspace-wallpapers (full corpus only)
and sample images inside the scikit-image wheel. Each photo is cropped to 4:3 and upscaled to phone sizes (1, 6, 12,
24 MP) with Lanczos, then given light luminance grain (σ 3), because an upscaled photo is smoother than a sensor's
output and would compress unrealistically well. Then written as a phone would (JPEG q92 4:2:0, EXIF orientation 6
for portrait shots), and as PNG with and without alpha and lossy WebP; plus generated edge cases (progressive, grey,
CMYK, 4:4:4, odd sizes with orientation 8, 16-bit and palette PNG, a flat screenshot-like graphic, lossless WebP).
Profiled inputs ("prof-" files): photos converted by LittleCMS into Adobe RGB and Display P3 (JPEG at 12 and 24 MP,
PNG at 12 MP) and into a FOGRA39 CMYK press profile (JPEG, 6 MP), with the profile embedded, using the freely
licensed profiles of tests/images/colour/profiles.

usage: corpus.py --sources DIR --profiles DIR --out DIR [--short]
"""

import argparse
import io
import os
import sys

from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageFilter

SIZES = {1: (1152, 864), 6: (2832, 2124), 12: (4032, 3024), 24: (5664, 4248)}
WALLPAPERS = ["ColorfulCups", "Autumn", "EveningGlow", "FallenLeaf", "BytheWater", "Path"]
SKIMAGE = ["coffee.png", "astronaut.png", "chelsea.png", "motorcycle_left.png", "rocket.jpg"]


def largest_wallpaper(root, name):
    images = os.path.join(root, "usr/share/wallpapers", name, "contents/images")
    best = None
    for f in os.listdir(images):
        w, h = (int(v) for v in os.path.splitext(f)[0].split("x"))
        if best is None or w * h > best[0]:
            best = (w * h, os.path.join(images, f))
    return best[1]


def photos(sources, short):
    found = []
    if not short:
        deb = os.path.join(sources, "wallpapers")
        found += [(n.lower(), largest_wallpaper(deb, n)) for n in WALLPAPERS]
    data = os.path.join(sources, "skimage", "skimage", "data")
    found += [(os.path.splitext(n)[0].split("_")[0], os.path.join(data, n)) for n in SKIMAGE]
    return found


def phone_photo(path, size, seed):
    """Crop to 4:3, Lanczos upscale to `size`, add grain."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    tw, th = size
    if w * th > h * tw:  # too wide: crop the sides
        cw = h * tw // th
        im = im.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
    else:
        ch = w * th // tw
        im = im.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
    im = im.resize(size, Image.Resampling.LANCZOS)
    # Image.effect_noise is seeded from the process; mix in a seed by offsetting a tile of noise.
    noise = Image.effect_noise((size[0] + seed % 7, size[1]), 3.0).crop((seed % 7, 0, seed % 7 + size[0], size[1]))
    noise = Image.merge("RGB", (noise, noise, noise))
    return ImageChops.add(im, noise, scale=1.0, offset=-128)


def cut_out(im):
    """A product shot on a transparent background: an ellipse with a feathered edge."""
    w, h = im.size
    mask = Image.new("L", im.size, 0)
    ImageDraw.Draw(mask).ellipse((w // 10, h // 10, w - w // 10, h - h // 10), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(max(2, w // 300)))
    rgba = im.convert("RGBA")
    rgba.putalpha(mask)
    return rgba


def exif_orientation(o):
    exif = Image.Exif()
    exif[0x0112] = o
    return exif.tobytes()


def save(out, name, im, fmt, **kw):
    path = os.path.join(out, name)
    im.save(path + ".tmp", fmt, **kw)
    os.replace(path + ".tmp", path)
    print(f"  {name}: {im.size[0]}x{im.size[1]} {im.mode}, {os.path.getsize(path) / 1e6:.2f} MB", file=sys.stderr)


def profiled(sources, profiles, out, short):
    """Photos stored in wide-gamut and CMYK spaces with their ICC profile embedded, as cameras and editors write."""
    read = lambda name: open(os.path.join(profiles, name), "rb").read()
    adobe, p3, cmyk = read("compatibleWithAdobeRGB1998.icc"), read("DisplayP3.icm"), read("CMYK-FOGRA39L-argyll.icc")
    srgb = ImageCms.createProfile("sRGB")

    def into(im, icc, mode="RGB"):
        return ImageCms.profileToProfile(im, srgb, ImageCms.ImageCmsProfile(io.BytesIO(icc)), outputMode=mode)

    ps = photos(sources, short)
    jpeg_sizes = [1] if short else [12, 24]
    for s in jpeg_sizes:
        name, path = ps[(s + 4) % len(ps)]
        im = phone_photo(path, SIZES[s], s * 10 + 4)
        save(out, f"prof-{s:02d}mp-jpeg-adobergb-{name}.jpg", into(im, adobe), "JPEG", quality=92, icc_profile=adobe)
        save(out, f"prof-{s:02d}mp-jpeg-p3-{name}.jpg", into(im, p3), "JPEG", quality=92, icc_profile=p3)
    s = 1 if short else 12
    name, path = ps[(s + 5) % len(ps)]
    im = phone_photo(path, SIZES[s], s * 10 + 5)
    save(out, f"prof-{s:02d}mp-png-adobergb-{name}.png", into(im, adobe), "PNG", compress_level=6, icc_profile=adobe)
    s = 1 if short else 6
    im = phone_photo(path, SIZES[s], s * 10 + 6)
    save(out, f"prof-{s:02d}mp-jpeg-cmyk-{name}.jpg", into(im, cmyk, "CMYK"), "JPEG", quality=90, icc_profile=cmyk)


def build(sources, out, short):
    os.makedirs(out, exist_ok=True)
    ps = photos(sources, short)
    sizes = [1] if short else [1, 6, 12, 24]
    for s in sizes:
        for i in range(2):
            name, path = ps[(s + i) % len(ps)]
            im = phone_photo(path, SIZES[s], s * 10 + i)
            if i == 0:
                # A portrait phone photo: the sensor's landscape pixels, shown rotated by EXIF orientation 6.
                save(out, f"{s:02d}mp-jpeg-o6-{name}.jpg", im, "JPEG", quality=92, exif=exif_orientation(6))
            else:
                save(out, f"{s:02d}mp-jpeg-{name}.jpg", im, "JPEG", quality=92)
        if s <= 12:
            name, path = ps[(s + 2) % len(ps)]
            im = phone_photo(path, SIZES[s], s * 10 + 2)
            save(out, f"{s:02d}mp-png-{name}.png", im, "PNG", compress_level=6)
            save(out, f"{s:02d}mp-webp-{name}.webp", im, "WEBP", quality=80)
            name, path = ps[(s + 3) % len(ps)]
            cut = cut_out(phone_photo(path, SIZES[s], s * 10 + 3))
            save(out, f"{s:02d}mp-png-alpha-{name}.png", cut, "PNG", compress_level=6)
            if s <= 6:
                save(out, f"{s:02d}mp-webp-alpha-{name}.webp", cut, "WEBP", quality=80)

    # Edge cases, about 1–2 MP.
    name, path = ps[-1]
    base = phone_photo(path, (1600, 1200), 99)
    save(out, f"edge-jpeg-progressive-{name}.jpg", base, "JPEG", quality=90, progressive=True)
    save(out, f"edge-jpeg-grey-{name}.jpg", base.convert("L"), "JPEG", quality=90)
    save(out, f"edge-jpeg-cmyk-{name}.jpg", base.convert("CMYK"), "JPEG", quality=90)
    save(out, f"edge-jpeg-444-q95-{name}.jpg", base, "JPEG", quality=95, subsampling=0)
    odd = base.resize((1001, 777), Image.Resampling.LANCZOS)
    save(out, f"edge-jpeg-odd-o8-{name}.jpg", odd, "JPEG", quality=90, exif=exif_orientation(8))
    grey16 = base.convert("L").point(lambda v: v * 257, mode="I").convert("I;16")
    save(out, f"edge-png-grey16-{name}.png", grey16, "PNG")
    save(out, f"edge-png-palette-{name}.png", cut_out(base).quantize(255), "PNG")
    logo = Image.open(os.path.join(sources, "skimage", "skimage", "data", "logo.png"))
    save(out, "edge-png-alpha-logo.png", logo, "PNG")
    # A screenshot-like graphic: flat colours and text-like strokes.
    flat = Image.new("RGB", (1920, 1080), (245, 245, 245))
    d = ImageDraw.Draw(flat)
    for k in range(40):
        d.rectangle((40, 30 + k * 26, 40 + (k * 97) % 1800, 44 + k * 26), fill=((k * 40) % 256, 80, 160))
    save(out, "edge-png-flat-graphic.png", flat, "PNG")
    if not short:
        save(out, f"edge-webp-lossless-{name}.webp", base, "WEBP", lossless=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sources", required=True)
    p.add_argument("--profiles", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--short", action="store_true")
    a = p.parse_args()
    build(a.sources, a.out, a.short)
    profiled(a.sources, a.profiles, a.out, a.short)


if __name__ == "__main__":
    main()
