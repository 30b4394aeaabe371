//! Numeric bounds, byte by byte: whether the number written so far can still
//! end inside `minimum`/`maximum` (so the mask never leads into a dead end), and
//! whether a finished number is inside them. Bounded numbers are written
//! without an exponent.

use super::node::NumberRule;

/// Most integer digits a bounded number may have (f64 is exact to about 15).
pub(crate) const MAX_INT_DIGITS: usize = 17;

/// One end of an interval: the value and whether it is excluded.
#[derive(Debug, Clone, Copy)]
struct End {
    v: f64,
    open: bool,
}

/// The numbers `text` can still become, as closed or half-open intervals; the
/// caller tests each against the bounds.
fn reachable(text: &[u8], integer: bool) -> Vec<(End, End)> {
    let (neg, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let dot = rest.iter().position(|&b| b == b'.');
    let int = &rest[..dot.unwrap_or(rest.len())];
    let closed = |v| End { v, open: false };
    let open = |v| End { v, open: true };
    let mut spans: Vec<(End, End)> = Vec::new();
    if int.is_empty() {
        // Only the sign so far: any magnitude.
        spans.push((closed(0.0), open(f64::INFINITY)));
    } else if let Some(d) = dot {
        let frac = &rest[d + 1..];
        let v = parse(rest).unwrap_or(0.0);
        let step = 10f64.powi(-(frac.len() as i32));
        // Beyond f64's precision a step adds nothing: the next double is the end.
        spans.push((closed(v), open((v + step).max(v.next_up()))));
    } else {
        let i = parse(int).unwrap_or(0.0);
        // More integer digits cannot follow a leading zero.
        let more = if int == b"0" {
            0
        } else {
            MAX_INT_DIGITS.saturating_sub(int.len())
        };
        for j in 0..=more {
            let scale = 10f64.powi(j as i32);
            let lo = i * scale;
            spans.push(match integer {
                true => (closed(lo), closed(lo + scale - 1.0)),
                false => (closed(lo), open(lo + scale)),
            });
        }
    }
    if neg {
        for s in &mut spans {
            *s = (
                End {
                    v: -s.1.v,
                    open: s.1.open,
                },
                End {
                    v: -s.0.v,
                    open: s.0.open,
                },
            );
        }
    }
    spans
}

fn parse(digits: &[u8]) -> Option<f64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The bounds as an interval (integers: closed, on whole numbers).
fn limits(rule: &NumberRule) -> (End, End) {
    let mut lo = rule.min.map_or(
        End {
            v: f64::NEG_INFINITY,
            open: false,
        },
        |(v, open)| End { v, open },
    );
    let mut hi = rule.max.map_or(
        End {
            v: f64::INFINITY,
            open: false,
        },
        |(v, open)| End { v, open },
    );
    if rule.integer {
        lo = End {
            v: if lo.open && lo.v.fract() == 0.0 {
                lo.v + 1.0
            } else {
                lo.v.ceil()
            },
            open: false,
        };
        hi = End {
            v: if hi.open && hi.v.fract() == 0.0 {
                hi.v - 1.0
            } else {
                hi.v.floor()
            },
            open: false,
        };
    }
    (lo, hi)
}

fn meets(a: (End, End), b: (End, End)) -> bool {
    let lo = match a.0.v.partial_cmp(&b.0.v) {
        Some(std::cmp::Ordering::Greater) => a.0,
        Some(std::cmp::Ordering::Less) => b.0,
        _ => End {
            v: a.0.v,
            open: a.0.open || b.0.open,
        },
    };
    let hi = match a.1.v.partial_cmp(&b.1.v) {
        Some(std::cmp::Ordering::Less) => a.1,
        Some(std::cmp::Ordering::Greater) => b.1,
        _ => End {
            v: a.1.v,
            open: a.1.open || b.1.open,
        },
    };
    lo.v < hi.v || (lo.v == hi.v && !lo.open && !hi.open)
}

/// Whether no number (no integer, for an integer rule) is within the bounds.
pub(crate) fn empty(rule: &NumberRule) -> bool {
    let (lo, hi) = limits(rule);
    lo.v > hi.v || (lo.v == hi.v && (lo.open || hi.open))
}

/// Whether the number begun as `text` (`-`, digits, a dot and digits) can
/// still end within the rule's bounds.
pub(crate) fn feasible(text: &[u8], rule: &NumberRule) -> bool {
    let bounds = limits(rule);
    reachable(text, rule.integer)
        .into_iter()
        .any(|span| meets(span, bounds))
}

/// Whether the finished number `text` is within the rule's bounds.
pub(crate) fn within(text: &[u8], rule: &NumberRule) -> bool {
    let Some(v) = parse(text) else { return false };
    let v = End { v, open: false };
    meets((v, v), limits(rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(integer: bool, min: Option<(f64, bool)>, max: Option<(f64, bool)>) -> NumberRule {
        NumberRule { integer, min, max }
    }

    #[test]
    fn prefixes_that_can_reach_the_range() {
        let age = rule(true, Some((0.0, false)), Some((120.0, false)));
        for ok in ["1", "12", "120", "0", "9", "99"] {
            assert!(feasible(ok.as_bytes(), &age), "{ok}");
        }
        for no in ["121", "1200", "13000", "-1"] {
            assert!(!feasible(no.as_bytes(), &age), "{no}");
        }
        assert!(within(b"120", &age) && within(b"0", &age) && !within(b"121", &age));
        // `-0` is zero.
        assert!(feasible(b"-", &age) && within(b"-0", &age));
        let neg = rule(false, Some((-5.0, true)), Some((-1.5, false)));
        assert!(feasible(b"-", &neg));
        assert!(feasible(b"-4.", &neg) && feasible(b"-1.5", &neg) && feasible(b"-1.6", &neg));
        assert!(
            !feasible(b"-5.", &neg),
            "-5.x is at most -5, which is excluded"
        );
        assert!(!feasible(b"-1.4", &neg) && !feasible(b"1", &neg));
        assert!(within(b"-1.5", &neg) && !within(b"-5", &neg) && !within(b"-1.49", &neg));
        // Half-open: 1.x never reaches 2.
        let at_least_two = rule(false, Some((2.0, false)), None);
        assert!(!feasible(b"1.", &at_least_two) && feasible(b"1", &at_least_two));
        let below_one = rule(false, None, Some((1.0, true)));
        assert!(feasible(b"0.", &below_one) && feasible(b"0.999", &below_one));
        assert!(!feasible(b"1", &below_one));
        let frac_int = rule(true, Some((0.5, false)), Some((2.5, true)));
        assert!(
            feasible(b"1", &frac_int) && feasible(b"2", &frac_int) && !feasible(b"3", &frac_int)
        );
        assert!(!within(b"0", &frac_int));
    }
}
