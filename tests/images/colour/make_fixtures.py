"""Builds the colour fixtures of tests/tests/colour.rs (see README.md here). Run once; the outputs are committed.

The truth is the chart: patches of known sRGB values. Each fixture stores the chart converted INTO another colour
space by LittleCMS (Pillow's ImageCms), or by plain matrix-and-curve maths for the 16-bit file (Pillow has no 16-bit
RGB mode), with that space's profile embedded; chart.json records, per fixture, which chart it holds and whether the
product must convert it ("convert"), must leave its pixels alone ("as-is": sRGB, or a profile to be ignored).
The product's colour code takes no part in making these files.

usage: python make_fixtures.py PROFILES_DIR OUT_DIR
  PROFILES_DIR: tests/images/colour/profiles (see README.md for where each profile comes from)
"""

import io
import json
import os
import struct
import sys
import zlib

from PIL import Image, ImageCms

PATCH = 32  # px per patch side; the test samples the central SAMPLE×SAMPLE pixels of each patch
SAMPLE = 16
COLUMNS = 8

# ColorChecker Classic in sRGB (the usual published 8-bit values), then the sRGB primaries, secondaries, white, black.
COLORCHECKER = [
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177), (103, 189, 170),
    (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108), (157, 188, 64), (224, 163, 46),
    (56, 61, 150), (70, 148, 73), (175, 54, 60), (231, 199, 31), (187, 86, 149), (8, 133, 161),
    (243, 243, 242), (200, 200, 200), (160, 160, 160), (122, 122, 121), (85, 85, 85), (52, 52, 52),
]
EXTREMES = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0), (255, 255, 255),
            (0, 0, 0)]
CHARTS = {
    "colour": COLORCHECKER + EXTREMES,
    # A press cannot print the sRGB primaries: the CMYK chart keeps to the ColorChecker, less its blue and purplish
    # blue, outside the FOGRA39 gamut (converted there and back by LittleCMS they are off by ΔE76 7.2 and 4.3; the
    # others by at most 1.5).
    "printable": [c for c in COLORCHECKER if c not in ((56, 61, 150), (80, 91, 166))],
    "grey": [(v, v, v) for v in range(0, 256, 17)],
}


# Ink amounts (C, M, Y, K in %) of press shadows: black alone, rich blacks up to all four inks at 100 %, dark colours,
# and a few lighter ones. Their truth is what LittleCMS shows (below): the darkest ink is sRGB's black there, because
# it compensates the black point.
SHADOW_INKS = [
    (0, 0, 0, 100), (0, 0, 0, 90), (0, 0, 0, 80), (0, 0, 0, 65), (100, 100, 100, 100), (75, 68, 67, 90),
    (60, 40, 40, 100), (50, 50, 50, 100), (30, 30, 30, 100), (100, 0, 0, 100), (0, 100, 0, 100), (0, 0, 100, 100),
    (80, 70, 20, 60), (20, 80, 70, 60), (70, 20, 80, 60), (60, 50, 50, 40), (40, 30, 30, 20), (0, 0, 0, 40),
    (10, 20, 40, 30), (0, 0, 0, 0),
]


def chart_image(name, mode="RGB", patches=None):
    patches = patches or CHARTS[name]
    rows = (len(patches) + COLUMNS - 1) // COLUMNS
    img = Image.new(mode, (COLUMNS * PATCH, rows * PATCH), (128, 128, 128) if mode == "RGB" else (0, 0, 0, 0))
    for i, colour in enumerate(patches):
        x, y = (i % COLUMNS) * PATCH, (i // COLUMNS) * PATCH
        img.paste(colour, (x, y, x + PATCH, y + PATCH))
    return img


def read(path):
    with open(path, "rb") as f:
        return f.read()


SRGB = ImageCms.createProfile("sRGB")


def into(img, profile_bytes, mode="RGB", intent=ImageCms.Intent.PERCEPTUAL):
    """The sRGB image converted into the profile's space (perceptual intent by default, Pillow's)."""
    dest = ImageCms.ImageCmsProfile(io.BytesIO(profile_bytes))
    return ImageCms.profileToProfile(img, SRGB, dest, outputMode=mode, renderingIntent=intent)


# --- Containers --------------------------------------------------------------------------------------------------

def jpeg(img, icc=None, **kw):
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95, subsampling=0, icc_profile=icc, **kw)
    return out.getvalue()


def jpeg_with_segments(img, icc, segments, declared=None):
    """A JPEG whose profile is cut by hand into `segments` APP2 ICC_PROFILE markers (Pillow cuts only past 64 KB).
    `declared`: the segment count written in each marker (to make an inconsistent set)."""
    plain = jpeg(img)
    size = -(-len(icc) // segments)
    chunks = [icc[i:i + size] for i in range(0, len(icc), size)]
    markers = b"".join(
        b"\xff\xe2" + struct.pack(">H", 2 + 14 + len(c)) + b"ICC_PROFILE\0" + bytes([n + 1, declared or len(chunks)]) + c
        for n, c in enumerate(chunks)
    )
    return insert_after_app0(plain, markers)


def insert_after_app0(data, markers):
    assert data[2:4] == b"\xff\xe0"
    end = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:end] + markers + data[end:]


def png(img, icc=None, chunks=()):
    """PNG (Pillow), with `chunks` ((type, data), …) inserted right after IHDR."""
    out = io.BytesIO()
    img.save(out, "PNG", icc_profile=icc)
    data = out.getvalue()
    extra = b"".join(png_chunk(t, d) for t, d in chunks)
    return data[:33] + extra + data[33:]


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16(width, height, rows, icc):
    """A 16-bit RGB PNG (colour type 2, depth 16) with an iCCP chunk, written directly."""
    raw = b"".join(b"\0" + struct.pack(f">{width * 3}H", *row) for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
            + png_chunk(b"iCCP", b"profile\0\0" + zlib.compress(icc, 9))
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def webp(img, icc):
    out = io.BytesIO()
    img.save(out, "WEBP", lossless=True, icc_profile=icc)
    return out.getvalue()


def tiff(img, icc):
    out = io.BytesIO()
    img.save(out, "TIFF", icc_profile=icc, compression="tiff_lzw")
    return out.getvalue()


# --- Plain maths for the 16-bit file -----------------------------------------------------------------------------

# sRGB linear to XYZ, adapted to the ICC's D50 (Bradford), as in the sRGB profiles.
SRGB_TO_D50 = [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]]


def s15(b):
    return struct.unpack(">i", b)[0] / 65536


def tag(profile, sig):
    count = struct.unpack(">I", profile[128:132])[0]
    for i in range(count):
        s, off, size = struct.unpack(">4sII", profile[132 + 12 * i:144 + 12 * i])
        if s == sig:
            return profile[off:off + size]
    raise KeyError(sig)


def inverse_trc(curve):
    """The inverse of a `curv` tag (gamma or table) as a function on 0..1."""
    assert curve[:4] == b"curv"
    n = struct.unpack(">I", curve[8:12])[0]
    if n == 1:
        gamma = struct.unpack(">H", curve[12:14])[0] / 256
        return lambda y: y ** (1 / gamma)
    table = [v / 65535 for v in struct.unpack(f">{n}H", curve[12:12 + 2 * n])]

    def inverse(y):
        lo, hi = 0, n - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if table[mid] <= y else (lo, mid)
        span = table[hi] - table[lo]
        return (lo + (0 if span == 0 else (y - table[lo]) / span)) / (n - 1)
    return inverse


def solve3(m, v):
    """m⁻¹·v for a 3×3 matrix (Cramer's rule)."""
    def det(a):
        return (a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
                + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]))
    d = det(m)
    out = []
    for c in range(3):
        mc = [[v[r] if k == c else m[r][k] for k in range(3)] for r in range(3)]
        out.append(det(mc) / d)
    return out


def to_matrix_profile_16(colour, profile):
    """An sRGB colour as 16-bit samples of a matrix/TRC profile (relative colorimetric, D50 PCS)."""
    lin = [(c / 255 / 12.92) if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in colour]
    xyz = [sum(SRGB_TO_D50[r][k] * lin[k] for k in range(3)) for r in range(3)]
    cols = [[s15(tag(profile, s)[8 + 4 * i:12 + 4 * i]) for i in range(3)] for s in (b"rXYZ", b"gXYZ", b"bXYZ")]
    m = [[cols[k][r] for k in range(3)] for r in range(3)]
    rgb_lin = solve3(m, xyz)
    trcs = [inverse_trc(tag(profile, s)) for s in (b"rTRC", b"gTRC", b"bTRC")]
    return [round(min(1.0, max(0.0, trcs[i](min(1.0, max(0.0, rgb_lin[i]))))) * 65535) for i in range(3)]


# --- Hostile profiles --------------------------------------------------------------------------------------------

def with_tag_offset(profile, sig, offset):
    """The profile with the tag table entry of `sig` pointing at `offset` (outside the data)."""
    count = struct.unpack(">I", profile[128:132])[0]
    p = bytearray(profile)
    for i in range(count):
        at = 132 + 12 * i
        if p[at:at + 4] == sig:
            p[at + 4:at + 8] = struct.pack(">I", offset)
            return bytes(p)
    raise KeyError(sig)


def with_description(profile, text):
    """A v2 profile whose `desc` tag says `text` instead (same length, NUL-padded), to test recognition by contents."""
    d = tag(profile, b"desc")
    n = struct.unpack(">I", d[8:12])[0]
    old = d[12:12 + n]
    new = text.encode("ascii").ljust(n - 1, b"\0")[:n - 1] + b"\0"
    assert len(new) == len(old)
    return profile.replace(old, new, 1)


def iccp_bomb(img, inflated):
    """A PNG whose iCCP chunk inflates to `inflated` bytes (a valid profile header, then zeros)."""
    out = io.BytesIO()
    img.save(out, "PNG")
    data = out.getvalue()
    header = bytearray(128)
    header[0:4] = struct.pack(">I", inflated)
    header[12:24] = b"mntrRGB XYZ "
    header[36:40] = b"acsp"
    c = zlib.compressobj(9)
    body = c.compress(bytes(header))
    zeros = bytes(1 << 20)
    for _ in range(inflated >> 20):
        body += c.compress(zeros)
    body += c.flush()
    return data[:33] + png_chunk(b"iCCP", b"bomb\0\0" + body) + data[33:]


# --- Metadata ----------------------------------------------------------------------------------------------------

def metadata_photo(img):
    """A JPEG with EXIF (camera make, model and body serial number, Artist, Copyright, GPS position), XMP, IPTC
    (APP13) and a comment: what a camera or a retouching tool leaves in a file."""
    exif = Image.Exif()
    exif[0x010F] = "ExampleCam"  # Make
    exif[0x0110] = "X100"  # Model
    exif[0x013B] = "Jane Photographer"  # Artist
    exif[0x8298] = "(c) 2024 Example Shop"  # Copyright
    ifd = exif.get_ifd(0x8769)  # Exif IFD
    ifd[0xA431] = "SN-0123456789"  # BodySerialNumber
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.0)  # GPSLatitudeRef, GPSLatitude
    gps[3], gps[4] = "E", (2.0, 17.0, 40.0)  # GPSLongitudeRef, GPSLongitude
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.48N"/>'
           b"</rdf:RDF></x:xmpmeta>")
    data = jpeg(img, exif=exif.tobytes(), xmp=xmp, comment=b"shot at home, GPS on")
    # IPTC in a Photoshop APP13 resource block (8BIM 0x0404): 2:80 By-line.
    iptc = b"\x1c\x02\x50" + struct.pack(">H", 17) + b"Jane Photographer"
    resource = b"8BIM\x04\x04\0\0" + struct.pack(">I", len(iptc)) + iptc + (b"\0" if len(iptc) % 2 else b"")
    app13 = b"Photoshop 3.0\0" + resource
    return insert_after_app0(data, b"\xff\xed" + struct.pack(">H", 2 + len(app13)) + app13)


def main():
    profiles, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    p = {name: read(os.path.join(profiles, name)) for name in sorted(os.listdir(profiles))}
    adobe, p3, prophoto = p["compatibleWithAdobeRGB1998.icc"], p["DisplayP3.icm"], p["ProPhoto.icm"]
    wide, swapped, cmyk = p["WideGamutRGB.icc"], p["SwappedRedAndGreen.icc"], p["CMYK-FOGRA39L-argyll.icc"]
    grey_profile, abstract = p["Gray.icc"], p["lab2lab.icm"]
    colour, printable, grey = chart_image("colour"), chart_image("printable"), chart_image("grey")
    fixtures = {}

    def put(name, data, chart, expect, note):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        fixtures[name] = {"chart": chart, "expect": expect, "note": note}

    for tag_name, prof in [("adobe-rgb", adobe), ("display-p3", p3), ("prophoto", prophoto), ("swapped-rg", swapped)]:
        converted = into(colour, prof)
        put(f"{tag_name}.jpg", jpeg(converted, prof), "colour", "convert", "JPEG q95 4:4:4, one APP2 segment")
        put(f"{tag_name}.png", png(converted, prof), "colour", "convert", "PNG iCCP")
        put(f"{tag_name}.webp", webp(converted, prof), "colour", "convert", "lossless WebP, ICCP chunk")
    put("wide-gamut.jpg", jpeg(into(colour, wide), wide), "colour", "convert", "WideGamut RGB JPEG")
    put("adobe-rgb-3-segments.jpg", jpeg_with_segments(into(colour, adobe), p["AdobeRGB1998.icc"], 3), "colour",
        "convert", "colord's 18.6 KB Adobe RGB profile cut into 3 APP2 segments")
    put("prophoto.tif", tiff(into(colour, prophoto), prophoto), "colour", "convert", "TIFF, ICC tag 34675")
    rows16 = []
    for y in range(colour.height):
        rows16.append([v for x in range(colour.width) for v in to_matrix_profile_16(colour.getpixel((x, y)), prophoto)])
    put("prophoto-16bit.png", png16(colour.width, colour.height, rows16, prophoto), "colour", "convert",
        "16-bit RGB PNG in ProPhoto, samples computed with plain matrix-and-curve maths")
    # cICP (Display P3 primaries 12, sRGB transfer 13, RGB 0, full range 1), no ICC.
    put("display-p3-cicp.png", png(into(colour, p3), chunks=[(b"cICP", bytes([12, 13, 0, 1]))]), "colour",
        "convert", "PNG cICP 12/13/0/1 (Display P3), no iCCP")
    # gAMA + cHRM describing Adobe RGB (1998): gamma 563/256, its primaries, D65.
    chrm = struct.pack(">8I", *[round(v * 100000) for v in (0.3127, 0.3290, 0.64, 0.33, 0.21, 0.71, 0.15, 0.06)])
    put("adobe-rgb-gama-chrm.png", png(into(colour, adobe),
                                       chunks=[(b"gAMA", struct.pack(">I", round(100000 * 256 / 563))),
                                               (b"cHRM", chrm)]),
        "colour", "convert", "PNG gAMA + cHRM (Adobe RGB primaries, gamma 2.2), no iCCP")
    # CMYK through a press profile, relative colorimetric (the intent that keeps in-gamut colours exact; LittleCMS's
    # perceptual intent also moves the black point of this v2 profile): Pillow writes Adobe-inverted samples with an
    # APP14 marker; the 120 KB profile takes two APP2 segments.
    cmyk_chart = into(printable, cmyk, "CMYK", ImageCms.Intent.RELATIVE_COLORIMETRIC)
    put("cmyk-fogra39.jpg", jpeg(cmyk_chart, cmyk), "printable", "convert",
        "CMYK JPEG (Adobe APP14, inverted), FOGRA39 profile in 2 APP2 segments")
    # Press shadows: the inks stored as they are, the truth LittleCMS's reading of them (ImageCms.profileToProfile,
    # Pillow's perceptual intent, into its own v4 sRGB: LittleCMS then compensates the black point).
    inks = [tuple(round(v * 255 / 100) for v in ink) for ink in SHADOW_INKS]
    shadows = chart_image(None, "CMYK", inks)
    shown = ImageCms.profileToProfile(shadows, ImageCms.ImageCmsProfile(io.BytesIO(cmyk)), SRGB, outputMode="RGB")
    CHARTS["cmyk-shadows-littlecms"] = [shown.getpixel(((i % COLUMNS) * PATCH + PATCH // 2,
                                                         (i // COLUMNS) * PATCH + PATCH // 2)) for i in range(len(inks))]
    put("cmyk-fogra39-shadows.jpg", jpeg(shadows, cmyk), "cmyk-shadows-littlecms", "convert",
        "CMYK JPEG of press shadows (black, rich blacks, dark colours), truth as LittleCMS shows them")
    grey_img = into(grey, grey_profile, "L")
    put("grey-gamma.jpg", jpeg(grey_img, grey_profile), "grey", "convert", "greyscale JPEG with a grey profile")
    put("grey-gamma.png", png(grey_img, grey_profile), "grey", "convert", "greyscale PNG with a grey profile")

    # sRGB inputs: the product must not touch the pixels (output identical to the untagged file's).
    put("srgb-untagged.png", png(colour), "colour", "as-is", "no profile: the reference of the sRGB cases")
    put("srgb-colord-v4.png", png(colour, p["sRGB-colord.icc"]), "colour", "as-is", "colord's sRGB (v4)")
    put("srgb-argyll-named-p3.png", png(colour, with_description(p["sRGB-argyll.icm"], "Display P3")), "colour",
        "as-is", "Argyll's sRGB profile with its description changed to 'Display P3': recognised by contents")
    put("srgb-chunk.png", png(colour, chunks=[(b"sRGB", b"\0")]), "colour", "as-is", "PNG sRGB chunk")
    put("srgb-littlecms.jpg", jpeg(colour, ImageCms.ImageCmsProfile(SRGB).tobytes()), "colour", "as-is",
        "LittleCMS's built-in sRGB profile")
    put("srgb-untagged.jpg", jpeg(colour), "colour", "as-is", "no profile: the reference of the JPEG sRGB case")
    put("adobe-rgb-named-srgb.jpg", jpeg(into(colour, adobe), with_description(adobe, "sRGB IEC61966-2.1")),
        "colour", "convert", "Adobe RGB pixels and profile, the profile's description saying 'sRGB IEC61966-2.1'")

    # Hostile profiles on sRGB pixels: ignored (the image treated as sRGB), the reason logged.
    put("hostile-truncated.jpg", jpeg(colour, adobe[:300]), "colour", "as-is", "the first 300 of 580 bytes")
    put("hostile-tag-outside.png", png(colour, with_tag_offset(adobe, b"rTRC", 0x7FFFFF00)), "colour", "as-is",
        "rTRC's tag table entry points 2 GB past the data")
    huge = bytearray(adobe)
    huge[0:4] = struct.pack(">I", 0xFFFFFF00)
    put("hostile-declared-4gb.webp", webp(colour, bytes(huge)), "colour", "as-is",
        "header declares a 4 GB profile (580 bytes present)")
    many = bytearray(adobe)
    many[128:132] = struct.pack(">I", 0x0FFFFFFF)
    put("hostile-tag-count.jpg", jpeg(colour, bytes(many)), "colour", "as-is", "tag count 268 million")
    put("hostile-wrong-class.png", png(colour, abstract), "colour", "as-is", "an abstract (Lab to Lab) profile")
    put("hostile-grey-profile-on-rgb.jpg", jpeg(colour, grey_profile), "colour", "as-is",
        "a grey profile on RGB pixels")
    put("hostile-missing-segment.jpg", jpeg_with_segments(colour, p["AdobeRGB1998.icc"], 3, declared=4), "colour",
        "as-is", "APP2 segments say 4, 3 present")
    put("hostile-iccp-bomb.png", iccp_bomb(colour, 64 << 20), "colour", "as-is",
        "iCCP chunk of 65 KB inflating to 64 MiB")

    put("metadata-gps-serial-xmp.jpg", metadata_photo(colour), "colour", "as-is",
        "EXIF (make, model, BodySerialNumber, Artist, Copyright, GPS), XMP, IPTC (APP13), COM")

    with open(os.path.join(out, "chart.json"), "w") as f:
        json.dump({"patch": PATCH, "sample": SAMPLE, "columns": COLUMNS, "charts": CHARTS, "fixtures": fixtures}, f,
                  indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
