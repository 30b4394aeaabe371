//! DICOM image parts: every fixture (tools/fixtures/dicom_fixtures.py, decoded
//! by pydicom and windowed with numpy as Google's MedGemma serving code does)
//! becomes exactly its expected RGB image; broken and unsupported files are
//! clear errors that never quote the file's identifying values; no cut or
//! flipped byte makes the decoder panic.

use std::path::PathBuf;

use medgemma_preprocess::dicom::DicomError;
use medgemma_preprocess::{decode_rgb, ImageError, ImageLimits, ImageProcessor, Rgb8};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dicom")
}

fn manifest() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("cases.json")).unwrap()).unwrap()
}

fn cases() -> Vec<(String, Vec<u8>, Rgb8)> {
    let limits = ImageLimits::default();
    manifest()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let file = c["file"].as_str().unwrap().to_string();
            let bytes = std::fs::read(dir().join(&file)).unwrap();
            let png = std::fs::read(dir().join(c["expected"].as_str().unwrap())).unwrap();
            (file, bytes, decode_rgb(&png, &limits).unwrap())
        })
        .collect()
}

fn canaries() -> Vec<String> {
    manifest()["canaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_fixture_decodes_to_the_reference_image() {
    let limits = ImageLimits::default();
    let all = cases();
    assert!(all.len() >= 12);
    for (file, bytes, expected) in all {
        let got = decode_rgb(&bytes, &limits).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            (got.width, got.height),
            (expected.width, expected.height),
            "{file}"
        );
        let diffs = got
            .data
            .iter()
            .zip(&expected.data)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diffs, 0, "{file}: {diffs} samples differ");
    }
}

#[test]
fn dicom_images_go_through_the_image_processor() {
    let proc = ImageProcessor::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3"),
    )
    .unwrap();
    for (file, bytes, _) in cases() {
        let images = proc
            .process(&bytes, None)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(images.len(), 1, "{file}");
        assert_eq!(images[0].pixels.len(), 3 * proc.height * proc.width);
    }
}

/// Every prefix of every fixture is an error (all of them end with their
/// pixels), and none panics.
#[test]
fn cut_files_are_errors_and_never_panic() {
    let limits = ImageLimits::default();
    for (file, bytes, _) in cases() {
        for cut in (132..bytes.len()).step_by(3) {
            let r = decode_rgb(&bytes[..cut], &limits);
            assert!(r.is_err(), "{file} cut at {cut} decoded");
        }
    }
}

/// Flipped bytes give an image or an error, never a panic, and no error quotes
/// the patient's name or ID.
#[test]
fn flipped_bytes_never_panic_or_leak() {
    let limits = ImageLimits::default();
    let canaries = canaries();
    let mut seed = 0x2545_f491_u64;
    for (file, bytes, _) in cases() {
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = 132 + (seed as usize) % (b.len() - 132);
                b[at] ^= 1 << ((seed >> 40) % 8);
            }
            if let Err(e) = decode_rgb(&b, &limits) {
                let msg = e.to_string();
                for c in &canaries {
                    assert!(!msg.contains(c.as_str()), "{file}: {msg}");
                }
            }
        }
    }
}

#[test]
fn the_pixel_limit_is_checked_before_decoding() {
    let (_, bytes, _) = cases().remove(0);
    let limits = ImageLimits {
        max_pixels: 100,
        ..ImageLimits::default()
    };
    assert!(matches!(
        decode_rgb(&bytes, &limits),
        Err(ImageError::TooManyPixels { limit: 100, .. })
    ));
}

// ---- files built here, for what the fixtures do not cover ----

const EXPLICIT: &str = "1.2.840.10008.1.2.1";

fn element(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == b"UI" || vr == b"OB" { 0 } else { b' ' });
    }
    let mut out = Vec::new();
    out.extend(tag.0.to_le_bytes());
    out.extend(tag.1.to_le_bytes());
    out.extend(vr);
    if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
        out.extend([0, 0]);
        out.extend((v.len() as u32).to_le_bytes());
    } else {
        out.extend((v.len() as u16).to_le_bytes());
    }
    out.extend(v);
    out
}

fn us(tag: (u16, u16), v: u16) -> Vec<u8> {
    element(tag, b"US", &v.to_le_bytes())
}

fn file(syntax: &str, body: &[Vec<u8>]) -> Vec<u8> {
    let meta = element((0x0002, 0x0010), b"UI", syntax.as_bytes());
    let mut out = vec![0u8; 128];
    out.extend(b"DICM");
    out.extend(element(
        (0x0002, 0x0000),
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    ));
    out.extend(meta);
    for e in body {
        out.extend(e);
    }
    out
}

/// A 2×2 16-bit MONOCHROME2 DX image, with `extra` elements (in tag order
/// with the rest: callers pass group 0028 ones).
fn mono16(extra: &[Vec<u8>], photometric: &str) -> Vec<Vec<u8>> {
    let mut body = vec![
        element((0x0008, 0x0060), b"CS", b"DX"),
        element((0x0010, 0x0010), b"PN", b"CANARY^DICOM^PHI"),
        us((0x0028, 0x0002), 1),
        element((0x0028, 0x0004), b"CS", photometric.as_bytes()),
    ];
    body.extend(extra.iter().cloned());
    body.extend([
        us((0x0028, 0x0010), 2),
        us((0x0028, 0x0011), 2),
        us((0x0028, 0x0100), 16),
        us((0x0028, 0x0101), 16),
        us((0x0028, 0x0102), 15),
        us((0x0028, 0x0103), 0),
        element((0x7FE0, 0x0010), b"OW", &[0, 0, 1, 0, 2, 0, 3, 0]),
    ]);
    body
}

fn dicom_error(bytes: &[u8]) -> DicomError {
    match decode_rgb(bytes, &ImageLimits::default()) {
        Err(ImageError::Dicom(e)) => e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_built_file_decodes_over_its_own_range() {
    let got = decode_rgb(
        &file(EXPLICIT, &mono16(&[], "MONOCHROME2")),
        &ImageLimits::default(),
    )
    .unwrap();
    assert_eq!(
        got.data,
        [0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255]
    );
}

#[test]
fn unsupported_and_broken_files_are_named_errors() {
    let jpeg2000 = file("1.2.840.10008.1.2.4.90", &mono16(&[], "MONOCHROME2"));
    assert_eq!(
        dicom_error(&jpeg2000),
        DicomError::TransferSyntax("1.2.840.10008.1.2.4.90".into())
    );
    let frames = file(
        EXPLICIT,
        &mono16(&[element((0x0028, 0x0008), b"IS", b"12")], "MONOCHROME2"),
    );
    assert_eq!(dicom_error(&frames), DicomError::Frames(12));
    let palette = file(EXPLICIT, &mono16(&[], "PALETTE COLOR"));
    assert!(matches!(dicom_error(&palette), DicomError::Unsupported(m) if m.contains("PALETTE")));
    let mut no_pixels = mono16(&[], "MONOCHROME2");
    no_pixels.pop();
    assert_eq!(
        dicom_error(&file(EXPLICIT, &no_pixels)),
        DicomError::Missing("PixelData")
    );
    let mut short = mono16(&[], "MONOCHROME2");
    *short.last_mut().unwrap() = element((0x7FE0, 0x0010), b"OW", &[0, 0, 1, 0]);
    assert_eq!(dicom_error(&file(EXPLICIT, &short)), DicomError::Truncated);
    let mut meta_only = file(EXPLICIT, &[]);
    meta_only.truncate(meta_only.len() - 3);
    assert!(decode_rgb(&meta_only, &ImageLimits::default()).is_err());
    for bytes in [jpeg2000, frames, palette] {
        let msg = decode_rgb(&bytes, &ImageLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("DICOM: ") && !msg.contains("CANARY"),
            "{msg}"
        );
    }
}

/// Sequences nested past the limit are refused instead of recursing without
/// bound.
#[test]
fn deep_sequence_nesting_is_refused() {
    let mut nested = Vec::new();
    for _ in 0..40 {
        let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
        let inner = element((0x0008, 0x1140), b"SQ", &nested);
        item.extend((inner.len() as u32).to_le_bytes());
        item.extend(inner);
        nested = item;
    }
    let mut body = vec![element((0x0008, 0x1140), b"SQ", &nested)];
    body.extend(mono16(&[], "MONOCHROME2"));
    assert!(matches!(
        dicom_error(&file(EXPLICIT, &body)),
        DicomError::Corrupt(m) if m.contains("nest")
    ));
}

/// An undefined-length sequence of undefined-length items.
fn undefined_sequence(tag: (u16, u16), items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(tag.0.to_le_bytes());
    out.extend(tag.1.to_le_bytes());
    out.extend(b"SQ\0\0");
    out.extend([0xFF; 4]);
    for item in items {
        out.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        out.extend(item);
        out.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
    }
    out.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    out
}

fn window(center: &[u8], width: &[u8]) -> Vec<u8> {
    let mut out = element((0x0028, 0x1050), b"DS", center);
    out.extend(element((0x0028, 0x1051), b"DS", width));
    out
}

/// Rescale and window count at the top level and in the functional groups;
/// inside any other sequence they belong to something else and are ignored.
#[test]
fn nested_windows_count_only_in_the_functional_groups() {
    let decode = |body: Vec<Vec<u8>>| {
        decode_rgb(&file(EXPLICIT, &body), &ImageLimits::default())
            .unwrap()
            .data
    };
    let own_range = vec![0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255];
    // Window 1..3 (center 2, width 2): 0 → 0, 1 → 0, 2 → 128 (tie to even), 3 → 255.
    let windowed = vec![0, 0, 0, 0, 0, 0, 128, 128, 128, 255, 255, 255];
    let mut body = vec![undefined_sequence((0x0008, 0x1140), &[window(b"2", b"2")])];
    body.extend(mono16(&[], "MONOCHROME2"));
    assert_eq!(decode(body), own_range);
    let mut body = vec![undefined_sequence(
        (0x5200, 0x9229),
        &[undefined_sequence((0x0028, 0x9132), &[window(b"2", b"2")])],
    )];
    body.extend(mono16(&[], "MONOCHROME2"));
    assert_eq!(decode(body), windowed);
}

/// An icon image's compressed pixels inside a sequence are skipped, not taken
/// for elements.
#[test]
fn encapsulated_pixels_inside_a_sequence_are_skipped() {
    let mut icon_pixels = Vec::new();
    icon_pixels.extend([0xE0, 0x7F, 0x10, 0x00]);
    icon_pixels.extend(b"OB\0\0");
    icon_pixels.extend([0xFF; 4]);
    icon_pixels.extend([0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    icon_pixels.extend([0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 0xFF, 0xD8, 0xFF, 0xD9]);
    icon_pixels.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    let mut body = vec![undefined_sequence((0x0088, 0x0200), &[icon_pixels])];
    body.extend(mono16(&[], "MONOCHROME2"));
    let got = decode_rgb(&file(EXPLICIT, &body), &ImageLimits::default()).unwrap();
    assert_eq!(got.data[9..], [255, 255, 255]);
}

#[test]
fn bit_depth_errors_say_what_is_wrong() {
    let mut deep = mono16(&[], "MONOCHROME2");
    let n = deep.len();
    deep[n - 5] = us((0x0028, 0x0100), 32);
    deep[n - 4] = us((0x0028, 0x0101), 32);
    deep[n - 3] = us((0x0028, 0x0102), 31);
    assert!(matches!(
        dicom_error(&file(EXPLICIT, &deep)),
        DicomError::Unsupported(m) if m.contains("BitsStored 32")
    ));
    let mut missing = mono16(&[], "MONOCHROME2");
    missing.remove(n - 4);
    assert_eq!(
        dicom_error(&file(EXPLICIT, &missing)),
        DicomError::Missing("BitsStored")
    );
    let odd = file(EXPLICIT, &mono16(&[], "ZZCANARY"));
    assert!(!dicom_error(&odd).to_string().contains("CANARY"));
}
