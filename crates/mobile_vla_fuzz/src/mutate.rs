//! AFL-style "havoc" mutation of byte strings, deterministic from a seed.
//!
//! Owns the random source and the mutations (bit flips, interesting values,
//! arithmetic on bytes and little-endian words, block deletes, duplicates,
//! inserts and overwrites, truncation, splicing with another corpus entry);
//! it knows nothing of what the bytes mean.

/// xorshift64*: fast, deterministic, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const INTERESTING_8: [u8; 9] = [0, 1, 0x7f, 0x80, 0xff, 16, 32, 64, 100];
const INTERESTING_32: [u32; 10] =
    [0, 1, 0xffff_ffff, 0x7fff_ffff, 0x8000_0000, 0xffff, 0x1_0000, 4096, 4097, 65535 * 3];

/// `input` mutated by 1 to 16 stacked mutations; `other` is another corpus
/// entry to splice with. Never longer than `max_len`.
pub fn havoc(rng: &mut Rng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 << rng.below(5);
    for _ in 0..rounds {
        let len = v.len();
        match rng.below(12) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING_8[rng.below(INTERESTING_8.len())];
            }
            2 if len >= 4 => {
                let i = rng.below(len - 3);
                let x = INTERESTING_32[rng.below(INTERESTING_32.len())];
                v[i..i + 4].copy_from_slice(&x.to_le_bytes());
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let d = rng.below(35) as u8 + 1;
                v[i] = if rng.chance(2) { v[i].wrapping_add(d) } else { v[i].wrapping_sub(d) };
            }
            4 if len >= 4 => {
                let i = rng.below(len - 3);
                let w = u32::from_le_bytes(v[i..i + 4].try_into().expect("4 bytes"));
                let d = rng.below(1024) as u32 + 1;
                let w = if rng.chance(2) { w.wrapping_add(d) } else { w.wrapping_sub(d) };
                v[i..i + 4].copy_from_slice(&w.to_le_bytes());
            }
            5 if len > 1 => {
                // Delete a block.
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(len / 2 + 1));
                v.drain(at..(at + n).min(len));
            }
            6 if len > 0 => {
                // Duplicate a block somewhere.
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(256));
                let block = v[from..from + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, block);
            }
            7 => {
                // Insert random or constant bytes.
                let at = rng.below(len + 1);
                let n = 1 + rng.below(64);
                let byte = rng.next() as u8;
                let block: Vec<u8> =
                    if rng.chance(2) { vec![byte; n] } else { (0..n).map(|_| rng.next() as u8).collect() };
                v.splice(at..at, block);
            }
            8 if len > 0 => {
                // Truncate: the most common real-world damage.
                let keep = rng.below(len);
                v.truncate(keep);
            }
            9 if !other.is_empty() && len > 0 => {
                // Splice: our head, the other's tail.
                let cut = rng.below(len);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            10 if len > 1 && !other.is_empty() => {
                // Overwrite a block with the other entry's bytes.
                let at = rng.below(len);
                let from = rng.below(other.len());
                let n = (1 + rng.below(64)).min(len - at).min(other.len() - from);
                v[at..at + n].copy_from_slice(&other[from..from + n]);
            }
            _ if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            _ => v.push(rng.next() as u8),
        }
        v.truncate(max_len);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn havoc_is_deterministic_and_bounded() {
        let seed = b"\xff\xd8\xff\xe0 a jpeg-ish seed with some length to it";
        let a: Vec<Vec<u8>> = {
            let mut r = Rng::new(7);
            (0..200).map(|_| havoc(&mut r, seed, b"other", 64)).collect()
        };
        let mut r = Rng::new(7);
        for want in &a {
            assert_eq!(&havoc(&mut r, seed, b"other", 64), want);
        }
        assert!(a.iter().all(|v| v.len() <= 64));
        assert!(a.iter().any(|v| v.as_slice() != seed), "it mutates");
    }
}
