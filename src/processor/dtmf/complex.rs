//! A complex number in `f32` with just the operations the DTMF analysis needs (no dependency
//! for a dozen lines).

use std::ops::{Add, Mul, Sub};

/// A complex number in `f32`, just enough for the analysis.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Complex {
    /// The real part.
    pub re: f32,
    /// The imaginary part.
    pub im: f32,
}

impl Complex {
    /// 0.
    pub const ZERO: Complex = Complex { re: 0.0, im: 0.0 };

    /// `e^{iθ}`, computed in `f64`.
    pub fn unit(theta: f64) -> Complex {
        Complex { re: theta.cos() as f32, im: theta.sin() as f32 }
    }

    /// From an `(re, im)` pair in `f64`.
    pub fn from_f64((re, im): (f64, f64)) -> Complex {
        Complex { re: re as f32, im: im as f32 }
    }

    /// Times a real number.
    pub fn scale(self, k: f32) -> Complex {
        Complex { re: self.re * k, im: self.im * k }
    }

    /// The complex conjugate.
    pub fn conj(self) -> Complex {
        Complex { re: self.re, im: -self.im }
    }

    /// `|z|²`.
    pub fn norm_sqr(self) -> f32 {
        self.re * self.re + self.im * self.im
    }
}

impl Add for Complex {
    type Output = Complex;
    fn add(self, o: Complex) -> Complex {
        Complex { re: self.re + o.re, im: self.im + o.im }
    }
}

impl Sub for Complex {
    type Output = Complex;
    fn sub(self, o: Complex) -> Complex {
        Complex { re: self.re - o.re, im: self.im - o.im }
    }
}

impl Mul for Complex {
    type Output = Complex;
    fn mul(self, o: Complex) -> Complex {
        Complex { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }
}
