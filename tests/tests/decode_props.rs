//! Property tests of image sniffing and header parsing (issue 17): whatever the bytes — small images of every
//! accepted format with their headers and bodies edited at random, cut short, or plain noise — `plan` and
//! `compress` never panic, agree on what they refuse from the header, and the allocations of `compress` stay
//! within the decode budget `plan` gave. A counting allocator sees the Rust side; libjpeg's own allocations are
//! capped by the same budget inside the decoder (and checked against the peak RSS in tests/tests/decode.rs).
//!
//! Bounded in time: 1,024 cases a property (about a second), under limits small enough that a header edited to the largest accepted
//! size still decodes in moments. Failing seeds are kept in decode_props.proptest-regressions (next to this file) and replayed first.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use imgpipe_core::compress::{CompressError, CompressLimits, compress, plan};
use proptest::prelude::*;

/// Small limits, so that the largest image a random header may declare is quick to decode.
const LIMITS: CompressLimits = CompressLimits { max_pixels: 1 << 20, max_dimension: 4096, max_decode_bytes: 48 << 20 };

// Per-thread allocation accounting: proptest runs each case on the test's thread and the codecs are
// single-threaded, so a thread's peak is that of the `compress` call it makes.
struct CountingAllocator;

thread_local! {
    static ALLOCATED: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = ALLOCATED.try_with(|allocated| {
        let now = allocated.get() + delta;
        allocated.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters touch only const-initialised
// thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// `f`'s result and the most bytes it had allocated at once on this thread.
fn peak_allocation<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let start = ALLOCATED.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let result = f();
    (result, u64::try_from(PEAK.with(Cell::get) - start).unwrap_or(0))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/images/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// One small image of every accepted format and the variants with their own decoding paths.
fn seeds() -> Vec<Vec<u8>> {
    let rgba = DynamicImage::ImageRgba8(RgbaImage::from_fn(48, 32, |x, y| {
        Rgba([(x * 5) as u8, (y * 7) as u8, (x ^ y) as u8 * 3, if x < 8 { 128 } else { 255 }])
    }));
    let encode = |image: &DynamicImage, format| {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    };
    let rgb = DynamicImage::ImageRgb8(rgba.to_rgb8());
    vec![
        encode(&rgb, ImageFormat::Jpeg),
        fixture("jpeg_progressive.jpg"),
        fixture("jpeg_cmyk_adobe.jpg"),
        fixture("jpeg_exif_orientation6_pillow.jpg"),
        encode(&rgba, ImageFormat::Png),
        encode(&DynamicImage::ImageRgba16(rgba.to_rgba16()), ImageFormat::Png),
        fixture("png_palette_trns.png"),
        encode(&rgba, ImageFormat::Gif),
        encode(&rgba, ImageFormat::WebP),
        fixture("webp_lossy_alpha.webp"),
        fixture("webp_animated.webp"),
        encode(&rgb, ImageFormat::Bmp),
        encode(&rgba, ImageFormat::Tiff),
        encode(&DynamicImage::ImageRgba32F(rgba.to_rgba32f()), ImageFormat::Tiff),
        fixture("tiff_cmyk.tif"),
    ]
}

/// A seed with up to 8 bytes replaced (half of them in the first 64 bytes, where the headers are), maybe cut short.
fn edited_image() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    let count = seeds.len();
    (0..count, prop::collection::vec((any::<bool>(), any::<u16>(), any::<u8>()), 0..8), prop::option::of(any::<u16>()))
        .prop_map(move |(seed, edits, cut)| {
            let mut bytes = seeds[seed].clone();
            for (in_header, at, value) in edits {
                let span = if in_header { bytes.len().min(64) } else { bytes.len() };
                let at = usize::from(at) * span / 65_536;
                bytes[at] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(usize::from(cut) * bytes.len() / 65_536);
            }
            bytes
        })
}

fn check(input: &[u8]) -> Result<(), TestCaseError> {
    let planned = plan(input, LIMITS);
    let (compressed, allocated) = peak_allocation(|| compress(input, 50, LIMITS));
    match (&planned, &compressed) {
        (Ok(plan), Ok(out)) => {
            prop_assert!(allocated <= plan.decode_bytes, "allocated {allocated} bytes, over the budget {plan:?}");
            prop_assert_eq!(
                (plan.width, plan.height).max((plan.height, plan.width)),
                (out.width, out.height).max((out.height, out.width))
            );
        }
        // What the header refuses, compress refuses too, for the same reason.
        (Err(refused), result) => prop_assert!(
            matches!(refused, CompressError::Decode(_)) || result.as_ref().err() == Some(refused),
            "plan refused {refused:?}, compress answered {result:?}"
        ),
        (Ok(plan), Err(_)) => {
            prop_assert!(allocated <= plan.decode_bytes, "allocated {allocated} bytes, over the budget {plan:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn edited_images_stay_within_their_budget(input in edited_image()) {
        check(&input)?;
    }

    #[test]
    fn any_bytes_are_refused_or_compressed_without_panic(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&input)?;
    }
}
