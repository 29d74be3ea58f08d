//! `array_gather`: a chunk assembled from pieces of others. Rechunking, slicing,
//! concatenation, stacking and reshapes are all plans of gathers made by the client; the
//! kernel moves bytes, so it serves every dtype (strings and records too).

use ndarray::{ArrayD, Axis, IxDyn};
use tern_proto::Datum;

use super::boxes::{Layout, copy_box, cut_box};
use super::{Spec, bytes_output, chunk_bytes, dims, standard_vec};

pub(super) fn gather(spec: &Spec, inputs: Vec<Datum>) -> Result<Datum, String> {
    let itemsize = spec.compute.itemsize() as usize;
    let out_shape = &spec.out_shape;
    let pieces = spec.raw["pieces"].as_array().ok_or("spec: no pieces")?;
    if pieces.len() != inputs.len() || spec.shapes.len() != inputs.len() {
        return Err(format!(
            "{} operands, {} pieces, {} shapes",
            inputs.len(),
            pieces.len(),
            spec.shapes.len()
        ));
    }
    let to = Layout::new(out_shape, itemsize);
    let mut out = vec![0u8; to.bytes()];
    for ((input, shape), piece) in inputs.into_iter().zip(&spec.shapes).zip(pieces) {
        let shape = shape.as_ref().ok_or("a piece's operand has no shape")?;
        if shape.len() != out_shape.len() {
            return Err(format!(
                "an operand of shape {shape:?} read into a chunk of shape {out_shape:?}: give both as many axes"
            ));
        }
        let mut bytes = chunk_bytes(input, &spec.compute, shape.iter().product())?;
        let mut shape = shape.clone();
        if let Some(take) = piece["take"].as_array() {
            if take.len() != shape.len() {
                return Err(format!(
                    "take lists for {} axes of {}",
                    take.len(),
                    shape.len()
                ));
            }
            // Index lists pick elements one by one (ndarray's select); a box of whole axes
            // is then copied like any other piece.
            let mut part = ArrayD::from_shape_vec(IxDyn(&with_item(&shape, itemsize)), bytes)
                .map_err(|e| e.to_string())?;
            for (axis, list) in take.iter().enumerate() {
                if list.is_null() {
                    continue;
                }
                let indexes = dims(list)?;
                // Bounded by where the piece lands, before anything is copied.
                if indexes.len() > out_shape[axis] {
                    return Err(format!(
                        "{} indexes along axis {axis} of a chunk {} long",
                        indexes.len(),
                        out_shape[axis]
                    ));
                }
                if let Some(bad) = indexes.iter().find(|&&i| i >= shape[axis]) {
                    return Err(format!(
                        "index {bad} along axis {axis} of length {}",
                        shape[axis]
                    ));
                }
                part = part.select(Axis(axis), &indexes);
                shape[axis] = indexes.len();
            }
            bytes = standard_vec(part);
        }
        let at = dims(&piece["at"])?;
        if at.len() != out_shape.len() {
            return Err(format!(
                "a piece placed by {} offsets in {} axes",
                at.len(),
                out_shape.len()
            ));
        }
        for (axis, (&offset, &length)) in at.iter().zip(out_shape).enumerate() {
            if offset
                .checked_add(shape[axis])
                .is_none_or(|end| end > length)
            {
                return Err(format!(
                    "a piece of {} along axis {axis} at {offset} overflows a chunk {length} long",
                    shape[axis]
                ));
            }
        }
        let whole: Vec<_> = shape.iter().map(|&n| 0..n).collect();
        copy_box(
            &bytes,
            &Layout::new(&shape, itemsize),
            &whole,
            &mut out,
            &to,
            &at,
        );
    }
    bytes_output(&spec.compute, out)
}

/// `shape` with one more axis: each element's bytes, so every dtype is a grid of bytes.
fn with_item(shape: &[usize], itemsize: usize) -> Vec<usize> {
    let mut dims = shape.to_vec();
    dims.push(itemsize);
    dims
}

/// `transpose` of one chunk of any dtype, its elements moved as bytes.
pub(super) fn transpose_bytes(spec: &Spec, inputs: Vec<Datum>) -> Result<Datum, String> {
    let itemsize = spec.compute.itemsize() as usize;
    let input = inputs.into_iter().next().ok_or("no operand")?;
    let shape = spec.first_shape()?;
    let mut axes = spec.axes.clone();
    let mut sorted = axes.clone();
    sorted.sort_unstable();
    if sorted != (0..shape.len()).collect::<Vec<_>>() {
        return Err(format!(
            "axes {axes:?} do not permute a {}-d chunk",
            shape.len()
        ));
    }
    let bytes = chunk_bytes(input, &spec.compute, shape.iter().product())?;
    let values = ArrayD::from_shape_vec(IxDyn(&with_item(&shape, itemsize)), bytes)
        .map_err(|e| e.to_string())?;
    axes.push(shape.len());
    bytes_output(
        &spec.compute,
        standard_vec(values.permuted_axes(IxDyn(&axes))),
    )
}

/// `array_split`: one chunk cut into boxes (per axis all of it, or `[start, stop)`), each
/// a chunk of its own in a [`Datum::Parts`], so that each task assembling a result chunk
/// fetches only the pieces it needs, and each input chunk is read once (a rechunk's split
/// step). Any dtype, moved as bytes.
pub(super) fn split(spec: &Spec, inputs: Vec<Datum>) -> Result<Datum, String> {
    let [input] = <[Datum; 1]>::try_from(inputs).map_err(|_| "a split reads one chunk")?;
    let itemsize = spec.compute.itemsize() as usize;
    let shape = spec.first_shape()?;
    let parts = spec.raw["parts"].as_array().ok_or("spec: no parts")?;
    let mut boxes = Vec::with_capacity(parts.len());
    let mut total = 0u64;
    for part in parts {
        let ranges = part.as_array().ok_or("a part is a list of ranges")?;
        if ranges.len() != shape.len() {
            return Err(format!(
                "a part of {} ranges of a {}-d chunk",
                ranges.len(),
                shape.len()
            ));
        }
        let mut boxed = Vec::with_capacity(ranges.len());
        let mut elements = 1u64;
        for (axis, range) in ranges.iter().enumerate() {
            let (start, stop) = if range.is_null() {
                (0, shape[axis])
            } else {
                match dims(range)?[..] {
                    [start, stop] => (start, stop),
                    _ => return Err(format!("a range is [start, stop], not {range}")),
                }
            };
            if start > stop || stop > shape[axis] {
                return Err(format!(
                    "range {start}..{stop} along axis {axis} of length {}",
                    shape[axis]
                ));
            }
            elements = elements.saturating_mul((stop - start) as u64);
            boxed.push(start..stop);
        }
        // Bounded before anything is copied: a spec comes from a client.
        total = total.saturating_add(elements);
        super::check_elements(total, &spec.compute)?;
        boxes.push(boxed);
    }
    let bytes = chunk_bytes(input, &spec.compute, shape.iter().product())?;
    let from = Layout::new(&shape, itemsize);
    boxes
        .into_iter()
        .map(|boxed| bytes_output(&spec.compute, cut_box(&bytes, &from, &boxed)))
        .collect::<Result<Vec<_>, _>>()
        .map(Datum::Parts)
}
