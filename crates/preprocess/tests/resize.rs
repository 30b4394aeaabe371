//! PIL's resize, every filter transformers names, against Pillow's own output on
//! shapes that take each of its code paths (tools/fixtures/resize_fixtures.py).

use std::path::PathBuf;

use medgemma_preprocess::resize::{resize, Resample};
use medgemma_preprocess::{ImageProcessor, Rgb8};
use safetensors::SafeTensors;
use serde_json::Value;

fn goldens() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/images/resize_goldens.safetensors");
    std::fs::read(path).unwrap()
}

fn metadata(st_bytes: &[u8], key: &str) -> Value {
    let (_, meta) = SafeTensors::read_metadata(st_bytes).unwrap();
    let text = &meta.metadata().as_ref().unwrap()[key];
    serde_json::from_str(text).unwrap()
}

#[test]
fn every_filter_equals_pillow_on_every_shape() {
    let bytes = goldens();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let filters = metadata(&bytes, "filters");
    let cases = metadata(&bytes, "cases");
    let mut checked = 0;
    for (i, case) in cases.as_array().unwrap().iter().enumerate() {
        let dims: Vec<usize> = case
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let (w, h, ow, oh) = (dims[0], dims[1], dims[2], dims[3]);
        let input = Rgb8 {
            width: w,
            height: h,
            data: st.tensor(&format!("{i}.input")).unwrap().data().to_vec(),
        };
        for (name, n) in filters.as_object().unwrap() {
            let filter = Resample::from_pil(n.as_u64().unwrap() as u32).unwrap();
            let want = st.tensor(&format!("{i}.{name}")).unwrap();
            let got = resize(&input, ow, oh, filter);
            assert_eq!((got.width, got.height), (ow, oh));
            let wrong = got
                .data
                .iter()
                .zip(want.data())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                wrong,
                0,
                "{name} {w}x{h} -> {ow}x{oh}: {wrong} of {} values differ",
                got.data.len()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 60);
}

#[test]
fn only_pil_filter_numbers_are_filters() {
    assert_eq!(Resample::from_pil(2), Some(Resample::Bilinear));
    assert_eq!(Resample::from_pil(0), Some(Resample::Nearest));
    assert_eq!(
        Resample::from_pil(6),
        None,
        "MKS2013 is Pillow's, not transformers'"
    );
}

#[test]
fn the_processor_resizes_with_the_configured_filter() {
    let config = |resample: &str| {
        format!(r#"{{"size": {{"height": 5, "width": 7}}, "resample": {resample}}}"#)
    };
    let bicubic = ImageProcessor::from_json_str(&config("3")).unwrap();
    assert_eq!(bicubic.resample, Resample::Bicubic);
    let default = ImageProcessor::from_json_str(&config("null")).unwrap();
    assert_eq!(
        default.resample,
        Resample::Bilinear,
        "transformers' default"
    );
    let err = ImageProcessor::from_json_str(&config("9")).unwrap_err();
    assert!(err.to_string().contains("resample 9"), "{err}");

    // The pixels come from that filter.
    let img = Rgb8 {
        width: 20,
        height: 14,
        data: (0u32..20 * 14 * 3)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect(),
    };
    let want = resize(&img, 7, 5, Resample::Bicubic);
    assert_ne!(want.data, resize(&img, 7, 5, Resample::Bilinear).data);
    let got = bicubic.to_pixels(&img);
    let plane = 7 * 5;
    for (p, px) in want.data.chunks_exact(3).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            let expected = (f64::from(v) / 255.0 - 0.5) / 0.5;
            let value = f64::from(got.pixels[c * plane + p]);
            assert!((value - expected).abs() < 1e-6, "pixel {p} channel {c}");
        }
    }
}
