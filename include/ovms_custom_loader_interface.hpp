// The OpenVINO Model Server custom loader interface, as OVMS declares and calls it.
// Reproduced from the facts in DESIGN.md section 4 so that the plugin's C++ shim (ffi/) and the
// project's OVMS-faithful C++ driver are compiled against the exact ABI OVMS uses
// (Itanium C++ ABI, _GLIBCXX_USE_CXX11_ABI=1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ovms {

enum class CustomLoaderStatus : int {
    OK = 0,
    MODEL_TYPE_IR = 1,
    MODEL_TYPE_ONNX = 2,
    MODEL_TYPE_BLOB = 3,
    MODEL_LOAD_ERROR = 4,
    MODEL_BLACKLISTED = 5,
    INTERNAL_ERROR = 6
};

class CustomLoaderInterface {
public:
    virtual ~CustomLoaderInterface() {}
    virtual CustomLoaderStatus loaderInit(const std::string& loaderConfigFile) = 0;
    virtual CustomLoaderStatus loadModel(const std::string& modelName, const std::string& basePath,
        const int version, const std::string& loaderOptions, std::vector<uint8_t>& modelBuffer,
        std::vector<uint8_t>& weights) = 0;
    virtual CustomLoaderStatus getModelBlacklistStatus(const std::string& modelName, const int version) {
        return CustomLoaderStatus::OK;
    }
    virtual CustomLoaderStatus unloadModel(const std::string& modelName, const int version) = 0;
    virtual CustomLoaderStatus retireModel(const std::string& modelName) = 0;
    virtual CustomLoaderStatus loaderDeInit() = 0;
};

}  // namespace ovms

// The factory OVMS looks up with dlsym after dlopen(RTLD_LAZY | RTLD_LOCAL).
extern "C" ovms::CustomLoaderInterface* createCustomLoader();
