//! Learning-rate schedule: linear warm-up, then cosine decay to a floor.

/// Warm-up + cosine schedule over a phase of `total_steps` optimiser steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    /// The peak rate, reached at the end of the warm-up.
    pub peak: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Steps in the phase.
    pub total_steps: usize,
    /// The rate at the last step, as a fraction of the peak.
    pub floor_fraction: f64,
}

impl WarmupCosine {
    /// A schedule whose warm-up is `warmup_fraction` of `total_steps` (at least one step when
    /// the fraction is positive).
    pub fn new(peak: f64, total_steps: usize, warmup_fraction: f64, floor_fraction: f64) -> Self {
        let warmup = (total_steps as f64 * warmup_fraction).ceil() as usize;
        Self {
            peak,
            warmup_steps: warmup.min(total_steps),
            total_steps,
            floor_fraction,
        }
    }

    /// The rate for step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let floor = self.peak * self.floor_fraction;
        floor + (self.peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_to_the_floor() {
        let s = WarmupCosine::new(1.0, 100, 0.1, 0.01);
        assert_eq!(s.warmup_steps, 10);
        assert!((s.at(0) - 0.1).abs() < 1e-12);
        assert!((s.at(9) - 1.0).abs() < 1e-12);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        // Half-way through the decay the rate is half-way between peak and floor.
        assert!((s.at(55) - (0.01 + 0.99 * 0.5)).abs() < 1e-9);
        assert!(s.at(99) > 0.01 && s.at(99) < 0.02);
        assert!((s.at(100) - 0.01).abs() < 1e-12);
        for step in 10..99 {
            assert!(s.at(step + 1) <= s.at(step), "not decreasing at {step}");
        }
    }

    #[test]
    fn no_warmup_starts_at_the_peak() {
        let s = WarmupCosine::new(0.5, 10, 0.0, 0.0);
        assert_eq!(s.at(0), 0.5);
        assert!(s.at(10).abs() < 1e-12);
    }
}
