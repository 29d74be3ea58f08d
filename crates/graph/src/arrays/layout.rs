//! `array_gather`: a chunk assembled from pieces of others. Rechunking, slicing,
//! concatenation, stacking and reshapes are all plans of gathers made by the client; the
//! kernel moves bytes, so it serves every dtype (strings and records too).

use ndarray::{ArrayD, Axis, IxDyn, Slice};
use tern_proto::Datum;

use super::{Spec, bytes_output, chunk_bytes, dims};

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
    // Each element's bytes along one more axis, so every dtype is a grid of bytes.
    let with_bytes = |shape: &[usize]| {
        let mut dims = shape.to_vec();
        dims.push(itemsize);
        dims
    };
    let mut out = ArrayD::<u8>::zeros(IxDyn(&with_bytes(out_shape)));
    for ((input, shape), piece) in inputs.into_iter().zip(&spec.shapes).zip(pieces) {
        let shape = shape.as_ref().ok_or("a piece's operand has no shape")?;
        if shape.len() != out_shape.len() {
            return Err(format!(
                "an operand of shape {shape:?} read into a chunk of shape {out_shape:?}: give both as many axes"
            ));
        }
        let bytes = chunk_bytes(input, &spec.compute, shape.iter().product())?;
        let mut part =
            ArrayD::from_shape_vec(IxDyn(&with_bytes(shape)), bytes).map_err(|e| e.to_string())?;
        if let Some(take) = piece["take"].as_array() {
            if take.len() != shape.len() {
                return Err(format!(
                    "take lists for {} axes of {}",
                    take.len(),
                    shape.len()
                ));
            }
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
            }
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
                .checked_add(part.len_of(Axis(axis)))
                .is_none_or(|end| end > length)
            {
                return Err(format!(
                    "a piece of {} along axis {axis} at {offset} overflows a chunk {length} long",
                    part.len_of(Axis(axis))
                ));
            }
        }
        out.slice_each_axis_mut(|ax| {
            let axis = ax.axis.index();
            match at.get(axis) {
                Some(&offset) => Slice::from(offset..offset + part.len_of(Axis(axis))),
                None => Slice::from(..),
            }
        })
        .assign(&part);
    }
    bytes_output(&spec.compute, out.iter().copied().collect())
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
    let mut dims = shape.clone();
    dims.push(itemsize);
    let values = ArrayD::from_shape_vec(IxDyn(&dims), bytes).map_err(|e| e.to_string())?;
    axes.push(shape.len());
    let turned = values.permuted_axes(IxDyn(&axes));
    bytes_output(&spec.compute, turned.iter().copied().collect())
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
    let mut dims = shape.clone();
    dims.push(itemsize);
    let values = ArrayD::from_shape_vec(IxDyn(&dims), bytes).map_err(|e| e.to_string())?;
    boxes
        .into_iter()
        .map(|boxed| {
            let piece = values.slice_each_axis(|ax| match boxed.get(ax.axis.index()) {
                Some(range) => Slice::from(range.clone()),
                None => Slice::from(..),
            });
            bytes_output(&spec.compute, piece.iter().copied().collect())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Datum::Parts)
}
