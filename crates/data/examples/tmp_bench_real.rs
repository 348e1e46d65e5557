use covidct_data::*;
fn main() {
    let root = std::path::Path::new("/work/shared/data/sarscov2-ct");
    let mut samples = Vec::new();
    for (label, class) in ["non-COVID", "COVID"].iter().enumerate() {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        paths.sort();
        samples.extend(paths.into_iter().map(|path| Sample { path, label }));
    }
    let threads: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let config = LoaderConfig::default();
    let report = pool.install(|| bench_data(&samples, &config, &DataBenchOptions::default())).unwrap();
    println!("{report}");
}
