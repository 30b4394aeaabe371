//! Image preprocessing and prompt expansion against transformers' Gemma3Processor
//! (PIL backend) on the fixture images, and clear errors for bad images.

use std::collections::HashMap;
use std::path::PathBuf;

use medgemma_preprocess::{
    decode_rgb, ImageError, ImageLimits, ImageProcessor, ImageTokens, PixelImage, PreprocessError,
    TemplateMessage, TextProcessor,
};
use safetensors::SafeTensors;
use serde_json::Value;

/// f32 rounding: every fixture image decodes and resizes to PIL's exact pixels
/// (JPEG through libjpeg-turbo's decoder, as PIL's).
const PIXEL_TOL: f32 = 1e-6;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

fn reference_pixels() -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(fixture("images/pixel_values.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, data)
        })
        .collect()
}

fn processor() -> ImageProcessor {
    ImageProcessor::load(&fixture("tiny-gemma3")).unwrap()
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("images/{name}"))).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pixels_equal_the_processor_for_every_fixture_image() {
    let reference = reference_pixels();
    let proc = processor();
    let mut checked = 0;
    for (key, want) in &reference {
        let (file, crop) = match key.split_once("#pan_and_scan") {
            Some((f, i)) => (f, Some(i.parse::<usize>().unwrap())),
            None => (key.as_str(), None),
        };
        let got = proc.process(&read(file), Some(crop.is_some())).unwrap();
        let img: &PixelImage = &got[crop.unwrap_or(0)];
        assert_eq!((img.height, img.width), (32, 32), "{key}");
        let d = max_diff(&img.pixels, want);
        assert!(d <= PIXEL_TOL, "{key}: max difference {d}");
        checked += 1;
    }
    assert!(checked >= 13, "only {checked} reference images");
}

#[test]
fn pan_and_scan_gives_the_processor_crop_count() {
    let got = processor().process(&read("wide.png"), Some(true)).unwrap();
    assert_eq!(got.len(), 4, "original and 3 crops");
    let off = processor().process(&read("wide.png"), None).unwrap();
    assert_eq!(off.len(), 1, "off by default");
}

fn goldens() -> Value {
    let text = std::fs::read_to_string(fixture("tiny-gemma3/image_goldens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn messages(v: &Value) -> Vec<TemplateMessage> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| TemplateMessage {
            role: m["role"].as_str().unwrap().into(),
            content: m["content"].clone(),
        })
        .collect()
}

#[test]
fn expanded_prompts_and_ids_equal_the_processor() {
    let dir = fixture("tiny-gemma3");
    let text = TextProcessor::load(&dir, &[]).unwrap();
    let tokens = ImageTokens::load(&dir, &text).unwrap();
    let proc = processor();
    let reference = reference_pixels();
    for (name, p) in goldens()["prompts"].as_object().unwrap() {
        let rendered = text.render_chat(&messages(&p["messages"]), true).unwrap();
        assert_eq!(rendered, p["rendered"].as_str().unwrap(), "{name}");
        let pas = p["do_pan_and_scan"].as_bool().unwrap();
        let images: Vec<Vec<PixelImage>> = p["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| proc.process(&read(f.as_str().unwrap()), Some(pas)).unwrap())
            .collect();
        let crops: Vec<usize> = images.iter().map(|v| v.len() - 1).collect();
        let expanded = tokens.expand(&rendered, &crops).unwrap();
        assert_eq!(expanded, p["expanded"].as_str().unwrap(), "{name}");
        let prompt = tokens.build_prompt(&text, &rendered, images).unwrap();
        let want: Vec<u32> = p["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(prompt.token_ids, want, "{name}");
        assert_eq!(
            prompt.images.len(),
            p["num_pixel_images"].as_u64().unwrap() as usize
        );
        for img in &prompt.images {
            assert_eq!(img.placeholder_len, 4);
            let run = &prompt.token_ids[img.placeholder_start..img.placeholder_start + 4];
            assert!(run.iter().all(|&t| t == tokens.image_token_id), "{name}");
        }
        if name == "one_image" {
            let d = max_diff(&prompt.images[0].pixels, &reference["square.png"]);
            assert!(d <= 1e-6, "{name}: {d}");
        }
    }
}

#[test]
fn marker_and_image_counts_must_match() {
    let dir = fixture("tiny-gemma3");
    let text = TextProcessor::load(&dir, &[]).unwrap();
    let tokens = ImageTokens::load(&dir, &text).unwrap();
    let err = tokens.expand("a <start_of_image> b", &[0, 0]).unwrap_err();
    assert!(
        matches!(
            err,
            PreprocessError::ImageCount {
                markers: 1,
                images: 2
            }
        ),
        "{err}"
    );
    let err = tokens.expand("no marker", &[0]).unwrap_err();
    assert!(
        err.to_string().contains("0 image markers but 1 images"),
        "{err}"
    );
}

fn decode(bytes: &[u8]) -> Result<medgemma_preprocess::Rgb8, ImageError> {
    decode_rgb(bytes, &ImageLimits::default())
}

/// A PNG whose header claims `w` x `h` pixels, followed by the small image's data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let png = read("square.png");
    let mut out = png[..33].to_vec(); // signature + IHDR chunk
    out[16..20].copy_from_slice(&w.to_be_bytes());
    out[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&out[12..29]); // chunk type + data
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&png[33..]);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn bad_images_give_clear_errors() {
    assert_eq!(decode(&[]), Err(ImageError::Empty));
    assert_eq!(
        decode(b"%PDF-1.7 not an image"),
        Err(ImageError::UnsupportedFormat)
    );
    assert_eq!(
        decode(b"just some text"),
        Err(ImageError::UnsupportedFormat)
    );

    let png = read("square.png");
    assert_eq!(decode(&png[..png.len() / 2]), Err(ImageError::Truncated));
    let mut corrupt = png.clone();
    for b in corrupt[40..200].iter_mut() {
        *b ^= 0x5a;
    }
    assert!(matches!(
        decode(&corrupt),
        Err(ImageError::Corrupt(_) | ImageError::Truncated)
    ));

    let small = ImageLimits {
        max_bytes: 1000,
        max_pixels: 50_000_000,
    };
    assert!(matches!(
        decode_rgb(&png, &small),
        Err(ImageError::TooManyBytes { limit: 1000, .. })
    ));
    let few = ImageLimits {
        max_bytes: 1 << 20,
        max_pixels: 1000,
    };
    assert!(matches!(
        decode_rgb(&png, &few),
        Err(ImageError::TooManyPixels {
            width: 64,
            height: 64,
            ..
        })
    ));
    // Refused from the header alone: 60000 x 60000 would need 10 GiB to decode.
    assert!(matches!(
        decode(&png_header(60_000, 60_000)),
        Err(ImageError::TooManyPixels {
            width: 60_000,
            height: 60_000,
            ..
        })
    ));
}

/// transformers 5 saves the image processor inside processor_config.json, with no
/// preprocessor_config.json: the same settings load from there.
#[test]
fn settings_load_from_a_transformers_5_processor_config() {
    let legacy: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-gemma3/preprocessor_config.json")).unwrap(),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("mg-processor-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = ImageProcessor::load(&dir).unwrap_err().to_string();
    assert!(
        missing.contains("neither preprocessor_config.json nor processor_config.json"),
        "{missing}"
    );
    let nested =
        serde_json::json!({"image_processor": legacy, "processor_class": "Gemma3Processor"});
    std::fs::write(dir.join("processor_config.json"), nested.to_string()).unwrap();
    let loaded = ImageProcessor::load(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(loaded.unwrap(), processor());
}

/// `jpeg` with an EXIF segment giving `orientation`, right after its SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(8u32.to_le_bytes());
    tiff.extend(1u16.to_le_bytes());
    for v in [0x0112u16, 3] {
        tiff.extend(v.to_le_bytes());
    }
    tiff.extend(1u32.to_le_bytes());
    tiff.extend([orientation.to_le_bytes(), [0, 0]].concat());
    tiff.extend(0u32.to_le_bytes());
    let payload = [b"Exif\0\0".to_vec(), tiff].concat();
    let len = (payload.len() + 2) as u16;
    [
        &jpeg[..2],
        &[0xff, 0xe1],
        &len.to_be_bytes(),
        &payload,
        &jpeg[2..],
    ]
    .concat()
}

/// The EXIF orientation is applied as `PIL.ImageOps.exif_transpose` applies it
/// (transformers' `load_image`): for each of the eight, the pixel each output
/// pixel comes from, as checked against PIL on these bytes.
#[test]
fn exif_orientation_turns_the_image_upright() {
    let jpeg = read("photo.jpg");
    let base = decode(&jpeg).unwrap();
    let (h, w) = (base.height, base.width);
    for orientation in 1..=8u16 {
        let got = decode(&with_exif_orientation(&jpeg, orientation)).unwrap();
        let turned = orientation >= 5;
        let dims = if turned { (w, h) } else { (h, w) };
        assert_eq!((got.height, got.width), dims, "orientation {orientation}");
        let source = |y: usize, x: usize| match orientation {
            1 => (y, x),
            2 => (y, w - 1 - x),
            3 => (h - 1 - y, w - 1 - x),
            4 => (h - 1 - y, x),
            5 => (x, y),
            6 => (h - 1 - x, y),
            7 => (h - 1 - x, w - 1 - y),
            _ => (x, w - 1 - y),
        };
        for y in 0..got.height {
            for x in 0..got.width {
                let (sy, sx) = source(y, x);
                let at = (y * got.width + x) * 3;
                let from = (sy * w + sx) * 3;
                assert_eq!(
                    got.data[at..at + 3],
                    base.data[from..from + 3],
                    "orientation {orientation} at ({y}, {x})"
                );
            }
        }
    }
}

/// One fixture image of each accepted format.
const EVERY_FORMAT: [&str; 6] = [
    "square.png",
    "photo.jpg",
    "tall.webp",
    "small.bmp",
    "scan.tiff",
    "anim.gif",
];

#[test]
fn every_format_and_cut_never_panics() {
    for name in EVERY_FORMAT {
        let bytes = read(name);
        assert!(decode(&bytes).is_ok(), "{name}");
        for cut in [1, 8, 16, 33, bytes.len() / 3, bytes.len() - 1] {
            let _ = decode(&bytes[..cut.min(bytes.len())]);
        }
        let mut flipped = bytes.clone();
        let n = flipped.len();
        for b in flipped[n / 4..n / 2].iter_mut() {
            *b = !*b;
        }
        let _ = decode(&flipped);
    }
}

/// A file cut anywhere in its pixel data is refused in every format (the JPEG
/// decoder alone would fill the rest with grey), as PIL refuses it.
#[test]
fn every_format_cut_short_is_refused() {
    for name in EVERY_FORMAT {
        let bytes = read(name);
        for share in [0.3, 0.6, 0.9] {
            let cut = (bytes.len() as f64 * share) as usize;
            let got = decode(&bytes[..cut]);
            assert!(
                matches!(got, Err(ImageError::Truncated | ImageError::Corrupt(_))),
                "{name} cut to {cut} of {} bytes: {:?}",
                bytes.len(),
                got.map(|i| (i.width, i.height))
            );
        }
    }
    let jpeg = read("photo.jpg");
    assert_eq!(decode(&jpeg[..jpeg.len() - 2]), Err(ImageError::Truncated));
    let mut trailing = jpeg.clone();
    trailing.extend_from_slice(b"trailing bytes after the end marker");
    assert!(decode(&trailing).is_ok());
    // Stray bytes before a marker: libjpeg warns and decodes, as PIL does.
    let sos = jpeg.windows(2).position(|w| w == [0xff, 0xda]).unwrap();
    let stray = [&jpeg[..sos], &[0x00, 0x13, 0x37], &jpeg[sos..]].concat();
    assert_eq!(decode(&stray), decode(&jpeg));
}

#[test]
fn grayscale_and_alpha_follow_the_reference_conversion() {
    let gray = decode(&read("gray8.png")).unwrap();
    assert!(gray
        .data
        .chunks_exact(3)
        .all(|p| p[0] == p[1] && p[1] == p[2]));
    let g16 = decode(&read("gray16.png")).unwrap();
    assert_eq!(g16.data.iter().min(), Some(&0));
    assert_eq!(g16.data.iter().max(), Some(&255));
    // Fully transparent pixels become white (composited, as transformers does).
    let alpha = decode(&read("alpha.png")).unwrap();
    assert_eq!(&alpha.data[..3], &[255, 255, 255]);
}
