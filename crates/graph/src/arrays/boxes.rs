//! Copying a box of one C-order chunk into a place in another, as runs of bytes.
//!
//! Rechunks, slices and concatenations move most of an array's bytes through these copies:
//! an element-at-a-time walk (ndarray's iterator over a view, a byte axis for the item)
//! moved about 100 MB/s, so a box is copied as the longest contiguous runs both sides share,
//! one `copy_from_slice` each.

use std::ops::Range;

/// A C-order array of `itemsize`-byte elements: its shape and its bytes' strides per axis.
pub(super) struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    itemsize: usize,
}

impl Layout {
    pub(super) fn new(shape: &[usize], itemsize: usize) -> Self {
        let mut strides = vec![0; shape.len()];
        let mut stride = itemsize;
        for (axis, &length) in shape.iter().enumerate().rev() {
            strides[axis] = stride;
            stride *= length;
        }
        Self {
            shape: shape.to_vec(),
            strides,
            itemsize,
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.itemsize
    }
}

/// Copy the box `ranges` of `src` (laid out as `from`) into `dst` (laid out as `to`) with its
/// first element at `at`. The callers have checked that the box lies inside both arrays and
/// that the layouts share their rank and element size.
pub(super) fn copy_box(
    src: &[u8],
    from: &Layout,
    ranges: &[Range<usize>],
    dst: &mut [u8],
    to: &Layout,
    at: &[usize],
) {
    let rank = from.shape.len();
    debug_assert_eq!(rank, to.shape.len());
    debug_assert_eq!(rank, ranges.len());
    debug_assert_eq!(from.itemsize, to.itemsize);
    if ranges.iter().any(|r| r.is_empty()) {
        return;
    }
    // The run: the innermost axes whose whole extent the box covers on both sides, plus the
    // axis just outside them (whose range is contiguous anyway).
    let mut inner = rank;
    let mut run = from.itemsize;
    while inner > 0 {
        let axis = inner - 1;
        run *= ranges[axis].len();
        inner = axis;
        let whole_here = ranges[axis].start == 0 && ranges[axis].len() == from.shape[axis];
        let whole_there = at[axis] == 0 && ranges[axis].len() == to.shape[axis];
        if !(whole_here && whole_there) {
            break;
        }
    }
    let start_src: usize = (0..rank).map(|a| ranges[a].start * from.strides[a]).sum();
    let start_dst: usize = (0..rank).map(|a| at[a] * to.strides[a]).sum();
    // An odometer over the axes outside the run.
    let mut index = vec![0usize; inner];
    let (mut s, mut d) = (start_src, start_dst);
    loop {
        dst[d..d + run].copy_from_slice(&src[s..s + run]);
        let mut axis = inner;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            s += from.strides[axis];
            d += to.strides[axis];
            if index[axis] < ranges[axis].len() {
                break;
            }
            s -= index[axis] * from.strides[axis];
            d -= index[axis] * to.strides[axis];
            index[axis] = 0;
        }
    }
}

/// The box `ranges` of `src` as a chunk of its own.
pub(super) fn cut_box(src: &[u8], from: &Layout, ranges: &[Range<usize>]) -> Vec<u8> {
    let shape: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
    let to = Layout::new(&shape, from.itemsize);
    let mut out = vec![0u8; to.bytes()];
    copy_box(src, from, ranges, &mut out, &to, &vec![0; shape.len()]);
    out
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn, Slice};
    use proptest::prelude::*;

    use super::*;

    /// A shape, a box in it, and a larger destination with a place for the box.
    fn case() -> impl Strategy<Value = (Vec<usize>, Vec<Range<usize>>, Vec<usize>, Vec<usize>)> {
        prop::collection::vec(1usize..6, 0..4).prop_flat_map(|shape| {
            let boxes: Vec<_> = shape
                .iter()
                .map(|&n| (0..n).prop_flat_map(move |s| (Just(s), s..=n)))
                .collect();
            let pads = prop::collection::vec((0usize..3, 0usize..3), shape.len());
            (Just(shape), boxes, pads).prop_map(|(shape, boxes, pads)| {
                let ranges: Vec<Range<usize>> = boxes.iter().map(|&(s, e)| s..e).collect();
                let to: Vec<usize> = ranges
                    .iter()
                    .zip(&pads)
                    .map(|(r, (before, after))| r.len() + before + after)
                    .collect();
                let at = pads.iter().map(|(before, _)| *before).collect();
                (shape, ranges, to, at)
            })
        })
    }

    proptest! {
        /// The same bytes where ndarray's slicing and assignment put them, for every element size.
        #[test]
        fn copy_box_is_slice_then_assign((shape, ranges, to_shape, at) in case(), itemsize in 1usize..5) {
            let from = Layout::new(&shape, itemsize);
            let src: Vec<u8> = (0..from.bytes()).map(|i| (i * 7 + 3) as u8).collect();
            let to = Layout::new(&to_shape, itemsize);
            let mut dst = vec![0u8; to.bytes()];
            copy_box(&src, &from, &ranges, &mut dst, &to, &at);

            let with_item = |s: &[usize]| [s, &[itemsize]].concat();
            let source = ArrayD::from_shape_vec(IxDyn(&with_item(&shape)), src.clone()).unwrap();
            let piece = source.slice_each_axis(|ax| match ranges.get(ax.axis.index()) {
                Some(r) => Slice::from(r.clone()),
                None => Slice::from(..),
            });
            let mut want = ArrayD::<u8>::zeros(IxDyn(&with_item(&to_shape)));
            want.slice_each_axis_mut(|ax| match at.get(ax.axis.index()) {
                Some(&o) => Slice::from(o..o + ranges[ax.axis.index()].len()),
                None => Slice::from(..),
            })
            .assign(&piece);
            prop_assert_eq!(dst, want.iter().copied().collect::<Vec<u8>>());
            let cut = cut_box(&src, &from, &ranges);
            prop_assert_eq!(cut, piece.iter().copied().collect::<Vec<u8>>());
        }
    }
}
