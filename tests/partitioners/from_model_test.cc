// partitioners::profile_model against models::summarize, and the search on block-granular
// ResNet profiles with names that map back to model cuts.
#include "partitioners/from_model.h"

#include "models/quilt_model.h"
#include "models/summary.h"
#include "models/zoo.h"
#include "partitioners/error.h"
#include "partitioners/search.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace quilt::partitioners {
namespace {

TEST(FromModel, ResNet50BlocksMatchTheSummary) {
  const models::Model m = models::make_model("resnet50");
  const models::ModelSummary s = models::summarize(m);
  const ModelProfile p = profile_model(m);
  EXPECT_EQ(p.name, "resnet50");
  EXPECT_EQ(p.input_bytes, 3 * 224 * 224 * 4);
  ASSERT_EQ(p.layers.size(), 18u);
  int64_t flops = 0, params = 0;
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const LayerProfile& l = p.layers[i];
    EXPECT_EQ(l.name, s.units[i].name);
    EXPECT_EQ(l.flops, s.units[i].flops);
    EXPECT_EQ(l.params, s.units[i].params);
    EXPECT_EQ(l.out_bytes, s.units[i].out_bytes);
    EXPECT_TRUE(l.measured_s.empty());
    flops += l.flops;
    params += l.params;
    if (i + 1 < p.layers.size()) {
      EXPECT_TRUE(l.cut_allowed) << l.name;
      ASSERT_EQ(l.crossing.size(), 1u);
      EXPECT_EQ(l.crossing[0].shape, s.units[i].out_shape);
      EXPECT_EQ(l.crossing[0].name, "out");
    } else {
      EXPECT_FALSE(l.cut_allowed);
      EXPECT_TRUE(l.crossing.empty());
    }
  }
  EXPECT_EQ(flops, s.flops);
  EXPECT_EQ(params, s.params);
  EXPECT_EQ(p.layers[13].name, "layer3.5");
  EXPECT_EQ(p.layers[13].crossing[0].shape, (Shape{1024, 14, 14}));
}

TEST(FromModel, CutNamesMapBothWays) {
  const models::Model m = models::make_model("resnet50");
  EXPECT_EQ(cut_after_layer(m, 0), "after_stem");
  EXPECT_EQ(cut_after_layer(m, 1), "after_layer1.0");
  EXPECT_EQ(cut_after_layer(m, 3), "after_layer1");
  EXPECT_EQ(cut_after_layer(m, 13), "after_layer3");
  EXPECT_THROW(cut_after_layer(m, 17), PartitionError);  // after the head
  EXPECT_THROW(cut_after_layer(m, 99), PartitionError);
  EXPECT_EQ(layers_of_cuts(m, {"after_layer1", "after_layer2", "after_layer3"}),
            (std::vector<int64_t>{3, 7, 13}));
  EXPECT_THROW(layers_of_cuts(m, {"after_layer9"}), models::ModelError);
}

TEST(FromModel, SearchOnResNet50BlocksAgreesWithBruteForceAndNamesModelCuts) {
  const models::Model m = models::make_model("resnet50");
  const ModelProfile p = profile_model(m);
  BoardProfile board;
  board.name = "u200";
  board.peak_flops = 18.6e12;
  board.efficiency = 0.3;
  for (int64_t k : {2, 3, 4}) {
    for (double rate : {1.0, 64.0}) {
      SearchOptions o;
      o.stages = k;
      o.cost.batch = 8;
      o.cost.rate = rate;
      const SearchResult fast = search(p, {board}, o);
      const SearchResult slow = brute_force(p, {board}, o);
      EXPECT_EQ(fast.cuts, slow.cuts) << "k=" << k << " R=" << rate;
      const std::vector<std::string> names = model_cut_names(m, fast);
      ASSERT_EQ(names.size(), static_cast<size_t>(k - 1));
      EXPECT_EQ(layers_of_cuts(m, names), fast.cuts);
      // The model accepts the search's cuts as they are.
      models::QuiltModel qm(m, names, models::AutoencoderOptions{rate, 1});
      EXPECT_EQ(qm->num_stages(), static_cast<size_t>(k));
    }
  }
  // evaluate() by model cut names, through layers_of_cuts.
  SearchOptions o;
  o.cost.batch = 1;
  const SearchResult at3 = evaluate(p, {board}, layers_of_cuts(m, {"after_layer3"}), o);
  EXPECT_EQ(at3.cut_names, (std::vector<std::string>{"layer3.5"}));
}

TEST(FromModel, MlpAndMeasuredTimes) {
  const models::Model m = models::make_model("mlp", models::ModelOptions{{30}, 2});
  ModelProfile p = profile_model(m, FromModelOptions{"my-mlp"});
  EXPECT_EQ(p.name, "my-mlp");
  ASSERT_EQ(p.layers.size(), 3u);
  EXPECT_EQ(p.layers[0].flops, 2 * 30 * 512);
  EXPECT_EQ(p.layers[0].crossing[0].shape, (Shape{512}));
  EXPECT_EQ(p.input_bytes, 30 * 4);
  add_measured_s(p, "cpu", {1e-6, 2e-6, 3e-7});
  EXPECT_DOUBLE_EQ(p.layers[1].measured_s.at("cpu"), 2e-6);
  EXPECT_THROW(add_measured_s(p, "cpu", {1e-6}), PartitionError);
  EXPECT_THROW(add_measured_s(p, "cpu", {1e-6, -1, 0}), PartitionError);
  EXPECT_THROW(add_measured_s(p, "", {1e-6, 1e-6, 0}), PartitionError);
}

TEST(FromModel, BadInputShapeIsAModelError) {
  EXPECT_THROW(models::make_model("resnet18", models::ModelOptions{{3, 32}, 10}),
               models::ModelError);
}

}  // namespace
}  // namespace quilt::partitioners

namespace quilt::partitioners {
namespace {

// A cut inside UNet's U crosses the skips too: one crossing tensor each, so the cost model
// charges the bytes and the autoencoder of every one; the wire bytes agree with QuiltModel's.
TEST(FromModel, UNetCutsListEveryCrossingTensor) {
  const models::Model m = models::make_model("unet", {{3, 64, 64}, 2});
  const ModelProfile p = profile_model(m);
  ASSERT_EQ(p.layers.size(), 10u);
  EXPECT_EQ(p.layers[0].name, "inc");
  ASSERT_EQ(p.layers[0].crossing.size(), 1u);
  EXPECT_EQ(p.layers[0].crossing[0].name, "out");
  const LayerProfile& down2 = p.layers[2];
  ASSERT_EQ(down2.crossing.size(), 3u);
  EXPECT_EQ(down2.crossing[0].name, "inc");
  EXPECT_EQ(down2.crossing[0].shape, (Shape{64, 64, 64}));
  EXPECT_EQ(down2.crossing[1].name, "down1");
  EXPECT_EQ(down2.crossing[2].shape, (Shape{256, 16, 16}));
  EXPECT_EQ(p.layers[5].crossing.size(), 4u);  // after up1: inc, down1, down2, up1
  EXPECT_EQ(p.layers[8].crossing.size(), 1u);  // after up4
  EXPECT_FALSE(p.layers[9].cut_allowed);
  for (double rate : {1.0, 4.0, 7.5}) {
    models::QuiltModel q(m, {"after_down2"}, models::AutoencoderOptions{rate, 1});
    EXPECT_EQ(wire_bytes(down2.crossing, rate), q->traffic()[0].wire_bytes_per_sample) << rate;
  }
  int64_t ae = 0;
  for (const auto& t : down2.crossing) ae += autoencoder_flops(t.shape, 4, 1);
  EXPECT_EQ(ae, 2 * 64 * 16 * 64 * 64 + 2 * 128 * 32 * 32 * 32 + 2 * 256 * 64 * 16 * 16);
}

}  // namespace
}  // namespace quilt::partitioners
