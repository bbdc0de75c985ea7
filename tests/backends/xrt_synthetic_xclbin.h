#pragma once
// A synthetic xclbin for XRT's noop shim (XCL_EMULATION_MODE=noop): an axlf container with the
// four sections the native API needs to open a kernel (EMBEDDED_METADATA, MEM_TOPOLOGY,
// IP_LAYOUT, CONNECTIVITY), laid out as /usr/include/xrt/xclbin.h defines them. It holds no
// bitstream: NEVER load such a file on a real board. Header-only, no XRT library needed (only
// xclbin.h for the layout), so both the tests and the generator tool can use it.

#include <xclbin.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace quilt::testing {

/// What the synthetic xclbin declares.
struct SyntheticXclbin {
  /// Kernels, each with the Quilt convention's arguments (in: float*, out: float*, batch:
  /// uint) and one compute unit `<name>_1`.
  std::vector<std::string> kernels = {"quilt_stage0", "quilt_stage1"};
  uint64_t ddr_bytes = uint64_t{16} << 30;  ///< size of the one DDR bank
  std::string platform = "xilinx_u200_gen3x16_xdma_base_2";
};

namespace detail {

inline std::string kernel_xml(const std::string& name, int index) {
  char base[32];
  std::snprintf(base, sizeof base, "0x%x", 0x1800000 + 0x10000 * index);
  return "        <kernel name=\"" + name + "\" language=\"c\" vlnv=\"xilinx.com:hls:" + name +
         ":1.0\" preferredWorkGroupSizeMultiple=\"0\" workGroupSize=\"1\" debug=\"false\" "
         "interrupt=\"true\" hwControlProtocol=\"ap_ctrl_hs\">\n"
         "          <port name=\"M_AXI_GMEM\" mode=\"master\" range=\"0xFFFFFFFF\" "
         "dataWidth=\"512\" portType=\"addressable\" base=\"0x0\"/>\n"
         "          <port name=\"S_AXI_CONTROL\" mode=\"slave\" range=\"0x1000\" dataWidth=\"32\" "
         "portType=\"addressable\" base=\"0x0\"/>\n"
         "          <arg name=\"in\" addressQualifier=\"1\" id=\"0\" port=\"M_AXI_GMEM\" "
         "size=\"0x8\" offset=\"0x10\" hostOffset=\"0x0\" hostSize=\"0x8\" type=\"float*\"/>\n"
         "          <arg name=\"out\" addressQualifier=\"1\" id=\"1\" port=\"M_AXI_GMEM\" "
         "size=\"0x8\" offset=\"0x1C\" hostOffset=\"0x0\" hostSize=\"0x8\" type=\"float*\"/>\n"
         "          <arg name=\"batch\" addressQualifier=\"0\" id=\"2\" port=\"S_AXI_CONTROL\" "
         "size=\"0x4\" offset=\"0x28\" hostOffset=\"0x0\" hostSize=\"0x4\" type=\"uint\"/>\n"
         "          <instance name=\"" +
         name +
         "_1\">\n"
         "            <addrRemap base=\"" +
         base +
         "\" range=\"0x10000\" port=\"S_AXI_CONTROL\"/>\n"
         "          </instance>\n"
         "        </kernel>\n";
}

template <typename T>
void append_bytes(std::vector<char>& out, const T& value) {
  const char* p = reinterpret_cast<const char*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

}  // namespace detail

/// The bytes of a synthetic xclbin for `spec`.
inline std::vector<char> synthetic_xclbin_bytes(const SyntheticXclbin& spec = {}) {
  // EMBEDDED_METADATA: the XML that XRT's xclbin parser reads kernels and arguments from.
  std::string xml =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<project name=\"quilt_synthetic\">\n"
      "  <platform vendor=\"xilinx\" boardid=\"u200\" name=\"" +
      spec.platform +
      "\" featureRomTime=\"0\">\n"
      "    <version major=\"1\" minor=\"0\"/>\n"
      "    <description/>\n"
      "    <device name=\"fpga0\" fpgaDevice=\"virtexuplus:xcu200:fsgd2104:-2:e\" "
      "addrWidth=\"0\">\n"
      "      <systemClocks/>\n"
      "      <core name=\"OCL_REGION_0\" target=\"hw\" type=\"clc_region\" clockFreq=\"300MHz\" "
      "numComputeUnits=\"" +
      std::to_string(spec.kernels.size()) + "\">\n";
  for (size_t k = 0; k < spec.kernels.size(); ++k)
    xml += detail::kernel_xml(spec.kernels[k], static_cast<int>(k));
  xml += "      </core>\n    </device>\n  </platform>\n</project>\n";
  std::vector<char> metadata(xml.begin(), xml.end());
  metadata.push_back('\0');

  // MEM_TOPOLOGY: one DDR4 bank.
  std::vector<char> topology;
  detail::append_bytes(topology, int32_t{1});
  detail::append_bytes(topology, int32_t{0});  // padding to the 8-byte aligned mem_data
  mem_data bank{};
  bank.m_type = MEM_DDR4;
  bank.m_used = 1;
  bank.m_size = spec.ddr_bytes / 1024;  // KB
  bank.m_base_address = 0x4000000000ull;
  std::strncpy(reinterpret_cast<char*>(bank.m_tag), "bank0", sizeof bank.m_tag - 1);
  detail::append_bytes(topology, bank);

  // IP_LAYOUT: one compute unit per kernel, sorted by base address.
  std::vector<char> layout;
  detail::append_bytes(layout, static_cast<int32_t>(spec.kernels.size()));
  detail::append_bytes(layout, int32_t{0});
  for (size_t k = 0; k < spec.kernels.size(); ++k) {
    ip_data ip{};
    ip.m_type = IP_KERNEL;
    ip.properties = IP_INT_ENABLE_MASK | (AP_CTRL_HS << IP_CONTROL_SHIFT);
    ip.m_base_address = 0x1800000 + 0x10000 * k;
    std::string cu = spec.kernels[k] + ":" + spec.kernels[k] + "_1";
    std::strncpy(reinterpret_cast<char*>(ip.m_name), cu.c_str(), sizeof ip.m_name - 1);
    detail::append_bytes(layout, ip);
  }

  // CONNECTIVITY: the two buffer arguments of every compute unit to bank 0.
  std::vector<char> connectivity;
  detail::append_bytes(connectivity, static_cast<int32_t>(2 * spec.kernels.size()));
  for (size_t k = 0; k < spec.kernels.size(); ++k)
    for (int32_t arg = 0; arg < 2; ++arg)
      detail::append_bytes(connectivity, connection{arg, static_cast<int32_t>(k), 0});

  struct Section {
    axlf_section_kind kind;
    const char* name;
    const std::vector<char>* data;
  };
  const Section sections[] = {{EMBEDDED_METADATA, "metadata", &metadata},
                              {MEM_TOPOLOGY, "mem_topology", &topology},
                              {IP_LAYOUT, "ip_layout", &layout},
                              {CONNECTIVITY, "connectivity", &connectivity}};
  constexpr size_t kSections = sizeof sections / sizeof sections[0];

  const size_t header_bytes =
      sizeof(axlf) + (kSections - 1) * sizeof(axlf_section_header);  // axlf holds one header
  auto align8 = [](size_t n) { return (n + 7) & ~size_t{7}; };
  size_t offset = align8(header_bytes);
  std::vector<axlf_section_header> headers;
  for (const auto& s : sections) {
    axlf_section_header h{};
    h.m_sectionKind = s.kind;
    std::strncpy(h.m_sectionName, s.name, sizeof h.m_sectionName - 1);
    h.m_sectionOffset = offset;
    h.m_sectionSize = s.data->size();
    headers.push_back(h);
    offset = align8(offset + s.data->size());
  }

  std::vector<char> out(offset, '\0');
  axlf top{};
  std::memcpy(top.m_magic, "xclbin2", 8);
  top.m_signature_length = -1;
  std::memset(top.reserved, 0xFF, sizeof top.reserved);
  top.m_uniqueId = 0x5175696c74ull;  // "Quilt"
  top.m_header.m_length = out.size();
  top.m_header.m_versionMajor = 2;
  top.m_header.m_versionMinor = 13;
  top.m_header.m_mode = XCLBIN_FLAT;
  std::strncpy(reinterpret_cast<char*>(top.m_header.m_platformVBNV), spec.platform.c_str(),
               sizeof top.m_header.m_platformVBNV - 1);
  // A fixed, recognisable uuid ("quilt synthetic" bytes), so tests can find it again.
  const unsigned char uuid[16] = {'q', 'u', 'i', 'l', 't', '-', 's', 'y',
                                  'n', 't', 'h', 'e', 't', 'i', 'c', '!'};
  std::memcpy(&top.m_header.uuid, uuid, sizeof uuid);
  top.m_header.m_numSections = kSections;
  top.m_sections[0] = headers[0];
  std::memcpy(out.data(), &top, sizeof top);
  std::memcpy(out.data() + sizeof top, headers.data() + 1,
              (kSections - 1) * sizeof(axlf_section_header));
  for (size_t i = 0; i < kSections; ++i)
    std::memcpy(out.data() + headers[i].m_sectionOffset, sections[i].data->data(),
                sections[i].data->size());
  return out;
}

/// Writes a synthetic xclbin to `path`. Throws std::runtime_error if it cannot.
inline void write_synthetic_xclbin(const std::string& path, const SyntheticXclbin& spec = {}) {
  auto bytes = synthetic_xclbin_bytes(spec);
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) throw std::runtime_error("cannot write the synthetic xclbin " + path);
}

}  // namespace quilt::testing
