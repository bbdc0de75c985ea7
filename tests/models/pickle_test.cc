// The unpickler of models/pickle.h on hand-made pickles (state_dict_test.cc reads real
// torch.save files): every value opcode, the storage class names and the kind names.

#include "models/pickle.h"
#include "models/model.h"

#include <gtest/gtest.h>

#include <string>

namespace quilt::models::pickle {
namespace {

PyRef load_all(const std::string& data) {
  Unpickler u("test.pt", data.data(), data.size(), [](const PyRef&) { return make(Kind::kNone); });
  size_t pos = 0;
  PyRef v = u.load(&pos);
  EXPECT_EQ(pos, data.size());
  return v;
}

TEST(Pickle, ReadsTheValuesOfAProtocol4Pickle) {
  // pickle.dumps({'a': [1, 2.5, True, None, (1, 2, 3), b'xy', 300, 70000, -5, 2**70, 's']},
  //              protocol=4)
  static const unsigned char kData[] = {
      0x80, 0x04, 0x95, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7d, 0x94,
      0x8c, 0x01, 0x61, 0x94, 0x5d, 0x94, 0x28, 0x4b, 0x01, 0x47, 0x40, 0x04, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x88, 0x4e, 0x4b, 0x01, 0x4b, 0x02, 0x4b, 0x03,
      0x87, 0x94, 0x43, 0x02, 0x78, 0x79, 0x94, 0x4d, 0x2c, 0x01, 0x4a, 0x70, 0x11,
      0x01, 0x00, 0x4a, 0xfb, 0xff, 0xff, 0xff, 0x8a, 0x09, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x40, 0x8c, 0x01, 0x73, 0x94, 0x65, 0x73, 0x2e};
  const std::string data(reinterpret_cast<const char*>(kData), sizeof(kData));
  const PyRef d = load_all(data);
  ASSERT_EQ(d->kind, Kind::kDict);
  const PyRef* a = dict_get(*d, "a");
  ASSERT_NE(a, nullptr);
  const auto& items = (*a)->items;
  ASSERT_EQ((*a)->kind, Kind::kList);
  ASSERT_EQ(items.size(), 11u);
  EXPECT_EQ(items[0]->i, 1);
  EXPECT_EQ(items[1]->f, 2.5);
  EXPECT_EQ(items[2]->kind, Kind::kBool);
  EXPECT_TRUE(items[2]->b);
  EXPECT_EQ(items[3]->kind, Kind::kNone);
  ASSERT_EQ(items[4]->kind, Kind::kTuple);
  ASSERT_EQ(items[4]->items.size(), 3u);
  EXPECT_EQ(items[4]->items[2]->i, 3);
  EXPECT_EQ(items[5]->kind, Kind::kBytes);
  EXPECT_EQ(items[5]->s, "xy");
  EXPECT_EQ(items[6]->i, 300);
  EXPECT_EQ(items[7]->i, 70000);
  EXPECT_EQ(items[8]->i, -5);
  EXPECT_EQ(items[9]->kind, Kind::kBigInt);
  EXPECT_EQ(items[10]->kind, Kind::kStr);
  EXPECT_EQ(items[10]->s, "s");
}

// load_all(data) throws a ModelError whose message contains `part`.
void expect_refused(const std::string& data, const std::string& part) {
  try {
    load_all(data);
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(Pickle, RefusesUnknownOpcodesAndGlobals) {
  expect_refused(std::string("\x80\x02\xff.", 4), "unsupported pickle opcode 0xff");
  // pickle.dumps(os.system, protocol=2)
  expect_refused(std::string("\x80\x02\x63posix\nsystem\nq\x00.", 19),
                 "refusing Python object posix.system");
}

TEST(Pickle, KnowsTorchsStorageClasses) {
  const std::pair<const char*, torch::ScalarType> kExpected[] = {
      {"torch.DoubleStorage", torch::kFloat64},
      {"torch.FloatStorage", torch::kFloat32},
      {"torch.HalfStorage", torch::kFloat16},
      {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},
      {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},
      {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},
      {"torch.BoolStorage", torch::kBool},
      {"torch.ComplexFloatStorage", torch::kComplexFloat},
      {"torch.ComplexDoubleStorage", torch::kComplexDouble},
      {"torch.UntypedStorage", torch::kUInt8}};
  for (const auto& [name, dtype] : kExpected) {
    ASSERT_TRUE(storage_dtype(name).has_value()) << name;
    EXPECT_EQ(*storage_dtype(name), dtype) << name;
  }
  EXPECT_FALSE(storage_dtype("torch.QInt8Storage").has_value());
  EXPECT_FALSE(storage_dtype("torch.Float").has_value());
}

TEST(Pickle, NamesEveryKind) {
  EXPECT_STREQ(kind_name(Kind::kNone), "None");
  EXPECT_STREQ(kind_name(Kind::kBigInt), "int");
  EXPECT_STREQ(kind_name(Kind::kGlobal), "class or function");
  EXPECT_STREQ(kind_name(Kind::kTensor), "tensor");
}

}  // namespace
}  // namespace quilt::models::pickle
