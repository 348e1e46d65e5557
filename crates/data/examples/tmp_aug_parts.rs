use covidct_imaging::*;
use std::time::Instant;
fn cpu() -> f64 { std::fs::read_to_string("/proc/thread-self/schedstat").unwrap().split_whitespace().next().unwrap().parse::<f64>().unwrap() / 1e9 }
fn main() {
    let img = decode_file(std::path::Path::new("/work/shared/data/sarscov2-ct/COVID/Covid (100).png"), &DecodeOptions::default()).unwrap().image;
    let img = resize_square(&img, 224, ResizeMode::Pad);
    let n = 2000;
    let d = AugmentConfig::default();
    let none = AugmentConfig::none();
    let cases: Vec<(&str, AugmentConfig)> = vec![
        ("none", none.clone()),
        ("default", d.clone()),
        ("crop", AugmentConfig { crop_scale: d.crop_scale, ..none.clone() }),
        ("rot", AugmentConfig { max_rotation_degrees: 10.0, ..none.clone() }),
        ("bc", AugmentConfig { brightness: 0.1, contrast: 0.1, ..none.clone() }),
        ("noise", AugmentConfig { noise_std: 3.0, ..none.clone() }),
        ("blur1", AugmentConfig { blur_probability: 1.0, max_blur_sigma: 1.0, ..none.clone() }),
    ];
    let only = std::env::args().nth(1);
    for (name, c) in cases {
        if only.as_deref().is_some_and(|o| o != name) { continue; }
        let t = Instant::now(); let c0 = cpu();
        let mut acc = 0u64;
        for i in 0..n { let o = augment(&img, &c, &mut sample_rng(1, 0, i)); acc += o.pixels[1000] as u64; }
        println!("{name:8} {:7.1} us/image wall, {:7.1} us cpu ({acc})", t.elapsed().as_secs_f64() * 1e6 / n as f64, (cpu()-c0)*1e6/n as f64);
    }
    let mut out = vec![0f32; 224*224];
    let t = Instant::now();
    for _ in 0..n { normalize_into(&img.pixels, 0.5, 0.5, &mut out); std::hint::black_box(&out); }
    println!("normalize {:7.1} us/image", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
