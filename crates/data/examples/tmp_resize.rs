use covidct_imaging::*;
use std::time::Instant;
fn cpu() -> f64 { std::fs::read_to_string("/proc/thread-self/schedstat").unwrap().split_whitespace().next().unwrap().parse::<f64>().unwrap() / 1e9 }
fn main() {
    let img = decode_file(std::path::Path::new("/work/shared/data/sarscov2-ct/COVID/Covid (100).png"), &DecodeOptions::default()).unwrap().image;
    println!("{}x{}", img.width, img.height);
    let n = 2000;
    for _ in 0..2 {
    let (t, c0) = (Instant::now(), cpu());
    for _ in 0..n { std::hint::black_box(resize_square(&img, 224, ResizeMode::Pad)); }
    println!("ours     {:7.1} us wall {:7.1} us cpu", t.elapsed().as_secs_f64()*1e6/n as f64, (cpu()-c0)*1e6/n as f64);
    let buf = image::GrayImage::from_raw(img.width, img.height, img.pixels.clone()).unwrap();
    let (t, c0) = (Instant::now(), cpu());
    for _ in 0..n { std::hint::black_box(image::imageops::resize(&buf, 224, 165, image::imageops::FilterType::Triangle)); }
    println!("image-rs {:7.1} us wall {:7.1} us cpu", t.elapsed().as_secs_f64()*1e6/n as f64, (cpu()-c0)*1e6/n as f64);
    let (t, c0) = (Instant::now(), cpu());
    for _ in 0..n { std::hint::black_box(decode_file(std::path::Path::new("/work/shared/data/sarscov2-ct/COVID/Covid (100).png"), &DecodeOptions::default()).unwrap()); }
    println!("decode   {:7.1} us wall {:7.1} us cpu", t.elapsed().as_secs_f64()*1e6/n as f64, (cpu()-c0)*1e6/n as f64);
    }
}
