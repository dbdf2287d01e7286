//! A checkpointable random stream (ChaCha8: its position is two numbers) and the normal draws
//! the training loops take from it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct Stream(ChaCha8Rng);

/// Where a stream is: enough to continue it bit for bit after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    pub seed: u64,
    /// ChaCha word position (u128 as a string: JSON numbers stop at 2^53).
    pub word_pos: String,
}

impl Stream {
    pub fn new(seed: u64) -> Stream {
        Stream(ChaCha8Rng::seed_from_u64(seed))
    }

    pub fn state(&self, seed: u64) -> StreamState {
        StreamState {
            seed,
            word_pos: self.0.get_word_pos().to_string(),
        }
    }

    pub fn restore(state: &StreamState) -> Stream {
        let mut rng = ChaCha8Rng::seed_from_u64(state.seed);
        rng.set_word_pos(state.word_pos.parse().unwrap_or(0));
        Stream(rng)
    }

    pub fn index(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }

    pub fn normal(&mut self) -> f32 {
        let u1: f64 = self.0.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.0.random();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0.random()
    }

    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

/// A cheap, fixed pseudo-random stream of values in [-0.5, 0.5) (Knuth's 64-bit LCG, top 53
/// bits): random sketches and test matrices, where no state needs saving. Fixed here, not
/// taken from a crate, so fitted teachers (and the results built on them) never change with a
/// dependency upgrade.
pub fn centered_uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_stream_continues_identically() {
        let mut a = Stream::new(9);
        a.normals(17);
        let saved = a.state(9);
        let json = serde_json::to_string(&saved).unwrap();
        let mut b = Stream::restore(&serde_json::from_str(&json).unwrap());
        assert_eq!(a.normals(100), b.normals(100));
        assert_eq!(a.index(1000), b.index(1000));
    }
}
