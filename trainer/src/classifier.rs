//! A small CNN classifier trained by the project on the dataset: its penultimate features give
//! FD-cls (a Frechet distance in *this classifier's* feature space, not Inception FID), and its
//! predictions give the label entropy/coverage of samples.
//!
//! ```text
//! DIR/classifier.json   config, dataset, test accuracy, weights hash
//! DIR/model.bpk
//! ```

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use serde::{Deserialize, Serialize};

use crate::conv::{conv_same, pixel_unshuffle};
use crate::data::ImageSet;
use crate::error::{Result, TrainerError, read_json, write_json};
use crate::optim::{OptimConfig, weights_hash};
use crate::rng::Stream;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub channels: usize,
    pub classes: usize,
    pub height: usize,
    pub width: usize,
    pub features: usize,
}

#[derive(Module, Debug)]
pub struct Classifier {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl ClassifierConfig {
    pub fn init(&self, device: &Device) -> Classifier {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let flat = 64 * (self.height / 4) * (self.width / 4);
        Classifier {
            conv1: conv(self.channels * 4, 32),
            conv2: conv(32, 64),
            fc1: LinearConfig::new(flat, self.features).init(device),
            fc2: LinearConfig::new(self.features, self.classes).init(device),
        }
    }
}

impl Classifier {
    /// Penultimate features `[B, F]` of images `[B, C, H, W]` in [-1, 1]: 2x2 pixel patches
    /// as channels, conv, pool, conv, dense (H and W divisible by 4).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let h = relu(conv_same(&self.conv1, pixel_unshuffle(x, 2)));
        let h = relu(conv_same(
            &self.conv2,
            avg_pool2d(h, AvgPoolOptions::new([2, 2])),
        ));
        let [b, c, hh, ww] = h.dims();
        relu(self.fc1.forward(h.reshape([b, c * hh * ww])))
    }

    pub fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc2.forward(self.features(x))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierCard {
    pub format: String,
    pub config: ClassifierConfig,
    pub dataset: String,
    pub test_accuracy: f64,
    pub steps: u64,
    pub weights_hash: String,
}

const FORMAT: &str = "bdense-classifier-v2";

fn batch_tensor(set: &ImageSet, rows: &[usize], device: &Device) -> Tensor<4> {
    let mut pixels = Vec::with_capacity(rows.len() * set.dim());
    rows.iter()
        .for_each(|&i| pixels.extend_from_slice(set.image(i)));
    Tensor::from_data(
        TensorData::new(pixels, [rows.len(), set.channels, set.height, set.width]),
        device,
    )
}

/// Trains the classifier on `train` and measures it on `test`; saves it into `dir`.
pub fn train_classifier(
    train: &ImageSet,
    test: &ImageSet,
    steps: u64,
    batch: usize,
    seed: u64,
    dir: &Path,
    device: &Device,
) -> Result<(Classifier, ClassifierCard)> {
    let config = ClassifierConfig {
        channels: train.channels,
        classes: train.classes,
        height: train.height,
        width: train.width,
        features: 64,
    };
    let autodiff = device.clone().autodiff();
    device.seed(seed);
    let mut model = config.init(&autodiff);
    let mut optim = OptimConfig {
        lr: 2e-3,
        ..OptimConfig::default()
    }
    .build();
    let mut rng = Stream::new(seed);
    for step in 0..steps {
        let rows: Vec<usize> = (0..batch).map(|_| rng.index(train.len())).collect();
        let x = batch_tensor(train, &rows, &autodiff);
        let onehot: Vec<f32> = rows
            .iter()
            .flat_map(|&i| {
                (0..config.classes).map(move |c| f32::from(train.labels[i] as usize == c))
            })
            .collect();
        let target =
            Tensor::<2>::from_data(TensorData::new(onehot, [batch, config.classes]), &autodiff);
        let loss = -(log_softmax(model.logits(x), 1) * target).sum_dim(1).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = if step < steps * 3 / 4 { 2e-3 } else { 5e-4 };
        model = optim.step(lr, model, grads);
    }
    let model = model.valid();
    let accuracy = accuracy(&model, test, device);
    let card = ClassifierCard {
        format: FORMAT.into(),
        config,
        dataset: train.name.clone(),
        test_accuracy: accuracy,
        steps,
        weights_hash: weights_hash(&model),
    };
    std::fs::create_dir_all(dir).map_err(|e| TrainerError::io(dir, e))?;
    let path = dir.join("model.bpk");
    model
        .clone()
        .save_file(&path)
        .map_err(|e| TrainerError::checkpoint(&path, e))?;
    write_json(&dir.join("classifier.json"), &card)?;
    Ok((model, card))
}

pub fn load_classifier(dir: &Path, device: &Device) -> Result<(Classifier, ClassifierCard)> {
    let card: ClassifierCard = read_json(&dir.join("classifier.json"))?;
    if card.format != FORMAT {
        return Err(TrainerError::checkpoint(
            dir.join("classifier.json"),
            format!("format {:?}, expected {FORMAT:?}", card.format),
        ));
    }
    let model = crate::checkpoint::load_module(
        card.config.init(device),
        &dir.join("model.bpk"),
        &card.weights_hash,
    )?;
    Ok((model, card))
}

/// Features `[n, F]` and predicted classes of `images` (`[n, C, H, W]` flattened), in chunks.
pub fn features_and_predictions(
    model: &Classifier,
    images: &[f32],
    shape: [usize; 3],
    device: &Device,
) -> (Vec<f32>, Vec<usize>) {
    let d: usize = shape.iter().product();
    let n = images.len() / d;
    let (mut feats, mut preds) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(256) {
        let b = 256.min(n - start);
        let x = Tensor::<4>::from_data(
            TensorData::new(
                images[start * d..(start + b) * d].to_vec(),
                [b, shape[0], shape[1], shape[2]],
            ),
            device,
        );
        let f = model.features(x);
        let logits = model.fc2.forward(f.clone());
        feats.extend(crate::solvers::host(&f));
        let classes: Vec<i64> = logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .unwrap_or_default();
        preds.extend(classes.into_iter().map(|c| c as usize));
    }
    (feats, preds)
}

pub fn accuracy(model: &Classifier, test: &ImageSet, device: &Device) -> f64 {
    let (_, preds) = features_and_predictions(
        model,
        &test.images,
        [test.channels, test.height, test.width],
        device,
    );
    preds
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| **p as i32 == **l)
        .count() as f64
        / test.len().max(1) as f64
}
