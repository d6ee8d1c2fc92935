//! `rate(q)`: the amount owed for a billable quantity (`pricing.PriceTable.rate`),
//! on scaled `i128`s (`fixed.rs`), exact and rounded once as the reference rounds.

use crate::fixed::{self, ProductSum};

/// One tier; `up_to` inclusive, `None` unbounded (scaled values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub up_to: Option<i128>,
    pub unit_amount: i128,
    pub flat_amount: i128,
}

/// A price model with its parameters (scaled values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Price {
    FlatFee {
        amount: i128,
    },
    Package {
        amount: i128,
        size: i128,
        round_up: bool,
    },
    Volume {
        tiers: Vec<Tier>,
    },
    Slab {
        tiers: Vec<Tier>,
    },
}

impl Price {
    /// `rate(quantity)`; `None` when the amount does not fit an `i128` (far
    /// beyond the stored range, which the rater refuses anyway).
    pub fn rate(&self, quantity: i128) -> Option<i128> {
        if quantity <= 0 {
            return Some(0);
        }
        match self {
            Price::FlatFee { amount } => fixed::mul(*amount, quantity),
            Price::Package {
                amount,
                size,
                round_up,
            } => {
                // quantity / size to an integer, ceiling or floor (both > 0).
                let (whole, rest) = (quantity / size, quantity % size);
                let packages = whole + i128::from(*round_up && rest != 0);
                amount.checked_mul(packages)
            }
            Price::Volume { tiers } => {
                let tier = tiers
                    .iter()
                    .find(|t| t.up_to.is_none_or(|up_to| quantity <= up_to))
                    .or(tiers.last())?;
                let mut sum = ProductSum::default();
                sum.add_product(tier.unit_amount, quantity);
                sum.add(tier.flat_amount);
                sum.round()
            }
            Price::Slab { tiers } => {
                let mut sum = ProductSum::default();
                let mut remaining = quantity;
                let mut previous_up_to = 0;
                for tier in tiers {
                    if remaining <= 0 {
                        break;
                    }
                    let taken = match tier.up_to {
                        None => remaining,
                        Some(up_to) => remaining.min(up_to - previous_up_to),
                    };
                    if taken > 0 {
                        sum.add_product(tier.unit_amount, taken);
                        sum.add(tier.flat_amount);
                        remaining -= taken;
                    }
                    if let Some(up_to) = tier.up_to {
                        previous_up_to = up_to;
                    }
                }
                if remaining > 0 {
                    sum.add_product(tiers.last()?.unit_amount, remaining);
                }
                sum.round()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx(text: &str) -> i128 {
        fixed::parse_scaled(text).unwrap()
    }

    #[test]
    fn models() {
        let flat = Price::FlatFee { amount: fx("0.01") };
        assert_eq!(flat.rate(fx("3")), Some(fx("0.03")));
        assert_eq!(flat.rate(0), Some(0));
        let package = Price::Package {
            amount: fx("5"),
            size: fx("10"),
            round_up: true,
        };
        assert_eq!(package.rate(fx("10.000000000000001")), Some(fx("10")));
        let tiers = vec![
            Tier {
                up_to: Some(fx("10")),
                unit_amount: fx("1"),
                flat_amount: fx("2"),
            },
            Tier {
                up_to: None,
                unit_amount: fx("0.5"),
                flat_amount: 0,
            },
        ];
        let volume = Price::Volume {
            tiers: tiers.clone(),
        };
        assert_eq!(volume.rate(fx("10")), Some(fx("12")));
        assert_eq!(volume.rate(fx("12")), Some(fx("6")));
        let slab = Price::Slab { tiers };
        assert_eq!(slab.rate(fx("12")), Some(fx("13")));
    }
}
