//! "Did you mean": the declared names closest to an unknown one.
//!
//! A script may declare thousands of characters and refer to thousands of unknown ones, so
//! comparing every unknown reference with every declared name would be quadratic. Instead each
//! name (lowercased) and each of its one-character deletions go into a hash index, as SymSpell
//! does: two names within one typo of each other share an entry, so a lookup costs a few dozen
//! hash probes and a few bounded edit-distance checks, whatever the number of names. The index
//! has a fixed budget of entries, so a hostile script cannot make it large either; names past the
//! budget simply get no suggestions.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Longer names are not indexed (nor looked up): typos in them are not worth the entries.
const MAX_KEY_CHARS: usize = 32;
/// Index entries (a name or one of its deletions) across all names.
const MAX_ENTRIES: usize = 500_000;
/// Names kept per index entry; more (`a1`, `a2`, … all lose a digit to `a`) add nothing useful.
const MAX_BUCKET: usize = 8;
/// Candidates checked per lookup.
const MAX_CANDIDATES: usize = 32;
/// Suggestions returned per lookup.
pub const MAX_SUGGESTIONS: usize = 3;

pub struct Suggest<'a> {
    names: Vec<&'a str>,
    index: HashMap<u64, Vec<u32>>,
}

impl<'a> Suggest<'a> {
    pub fn new(names: impl IntoIterator<Item = &'a str>) -> Suggest<'a> {
        let mut s = Suggest {
            names: Vec::new(),
            index: HashMap::new(),
        };
        let mut entries = 0usize;
        for name in names {
            let Ok(i) = u32::try_from(s.names.len()) else {
                break;
            };
            s.names.push(name);
            let key = key(name);
            if key.is_empty() || key.len() > MAX_KEY_CHARS {
                continue;
            }
            if entries + key.len() + 1 > MAX_ENTRIES {
                break;
            }
            entries += key.len() + 1;
            for h in variants(&key) {
                let bucket = s.index.entry(h).or_default();
                if bucket.len() < MAX_BUCKET && bucket.last() != Some(&i) {
                    bucket.push(i);
                }
            }
        }
        s
    }

    /// Up to [`MAX_SUGGESTIONS`] names within two edits of `query` (one for short names),
    /// closest first, ignoring case.
    pub fn closest(&self, query: &str) -> Vec<&'a str> {
        let q = key(query);
        if q.is_empty() || q.len() > MAX_KEY_CHARS {
            return Vec::new();
        }
        let max_distance = if q.len() <= 4 { 1 } else { 2 };
        let mut candidates: Vec<u32> = Vec::new();
        'probe: for h in variants(&q) {
            for &i in self.index.get(&h).map(Vec::as_slice).unwrap_or_default() {
                if !candidates.contains(&i) {
                    candidates.push(i);
                    if candidates.len() == MAX_CANDIDATES {
                        break 'probe;
                    }
                }
            }
        }
        let mut found: Vec<(usize, u32)> = candidates
            .into_iter()
            .filter_map(|i| {
                let name = self.names.get(i as usize)?;
                let d = distance_within(&q, &key(name), max_distance)?;
                Some((d, i))
            })
            .collect();
        found.sort_unstable();
        found
            .into_iter()
            .take(MAX_SUGGESTIONS)
            .filter_map(|(_, i)| self.names.get(i as usize).copied())
            .collect()
    }
}

fn key(name: &str) -> Vec<char> {
    name.chars()
        .flat_map(char::to_lowercase)
        .take(MAX_KEY_CHARS + 1)
        .collect()
}

/// Hashes of `key` and of each of its one-character deletions.
fn variants(key: &[char]) -> impl Iterator<Item = u64> + '_ {
    (0..=key.len()).map(move |skip| {
        let mut h = DefaultHasher::new();
        for (i, c) in key.iter().enumerate() {
            if i != skip {
                c.hash(&mut h);
            }
        }
        h.finish()
    })
}

/// Levenshtein distance (adjacent swaps count one) when at most `max`, in a band of width
/// `2 × max + 1`: O(len × max).
fn distance_within(a: &[char], b: &[char], max: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    const FAR: usize = usize::MAX / 4;
    let width = b.len() + 1;
    // Three rows for the transposition step.
    let mut prev2 = vec![FAR; width];
    let mut prev: Vec<usize> = (0..width).map(|j| if j <= max { j } else { FAR }).collect();
    let mut cur = vec![FAR; width];
    for i in 1..=a.len() {
        cur.iter_mut().for_each(|c| *c = FAR);
        if i <= max {
            cur[0] = i;
        }
        let lo = i.saturating_sub(max).max(1);
        let hi = (i + max).min(b.len());
        let mut best = cur[0];
        for j in lo..=hi {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j - 1] + cost).min(prev[j] + 1).min(cur[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
            best = best.min(d);
        }
        if best > max {
            return None;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    let d = prev[b.len()];
    (d <= max).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_names_one_or_two_typos_away() {
        let s = Suggest::new(["Mira", "Jun", "Old Tomas", "Captain Hale"]);
        assert_eq!(s.closest("Mria"), ["Mira"]);
        assert_eq!(s.closest("mira"), ["Mira"]);
        assert_eq!(s.closest("Jnu"), ["Jun"]);
        assert_eq!(s.closest("Old Thomas"), ["Old Tomas"]);
        assert_eq!(s.closest("Captian Hale"), ["Captain Hale"]);
        assert!(s.closest("Ghost").is_empty());
        assert!(s.closest("").is_empty());
    }

    #[test]
    fn many_names_stay_cheap_and_bounded() {
        let names: Vec<String> = (0..20_000).map(|i| format!("c{i:05}")).collect();
        let s = Suggest::new(names.iter().map(String::as_str));
        assert_eq!(s.closest("x00042").first().copied(), Some("c00042"));
        assert!(s.closest("x00042").len() <= MAX_SUGGESTIONS);
        let long = "y".repeat(10_000);
        assert!(s.closest(&long).is_empty());
    }

    #[test]
    fn distance() {
        let d = |a: &str, b: &str| {
            let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            distance_within(&a, &b, 2)
        };
        assert_eq!(d("abc", "abc"), Some(0));
        assert_eq!(d("abc", "abd"), Some(1));
        assert_eq!(d("abc", "acb"), Some(1));
        assert_eq!(d("abc", "ab"), Some(1));
        assert_eq!(d("abcd", "ab"), Some(2));
        assert_eq!(d("abcdef", "ab"), None);
        assert_eq!(d("kitten", "sitting"), None);
        assert_eq!(d("", "ab"), Some(2));
    }
}
