// The OVMS-facing C++ shim of libovsaruntime.so: implements ovms::CustomLoaderInterface
// (include/ovms_custom_loader_interface.hpp) by forwarding to the plugin's C API
// (include/ovsa_runtime.h, generated from loader/ffi.rs by cbindgen). No exception leaves this
// file except the std::runtime_error that loaderInit throws when the loader config is unusable
// (OVMS then does not register the loader).

#include <exception>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "ovms_custom_loader_interface.hpp"
#include "ovsa_runtime.h"
#include "ovsa_shim_buffers.hpp"

namespace {

using ovms::CustomLoaderStatus;

std::string last_error() {
    char buf[1024];
    size_t n = ovsa_last_error(buf, sizeof buf);
    if (n >= sizeof buf) {
        try {
            std::string s(n + 1, '\0');
            ovsa_last_error(&s[0], s.size());
            s.resize(n);
            return s;
        } catch (...) {
        }
    }
    return std::string(buf);
}

// The C API's statuses (OvsaStatus, generated from loader/ffi/status.rs) mirror OVMS's value for
// value: a divergence fails the build here rather than misreporting a status to OVMS.
static_assert(sizeof(OvsaStatus) == sizeof(int32_t), "OvsaStatus is an int32_t");
static_assert(OVSA_OK == static_cast<int32_t>(CustomLoaderStatus::OK), "OK");
static_assert(OVSA_MODEL_TYPE_IR == static_cast<int32_t>(CustomLoaderStatus::MODEL_TYPE_IR), "IR");
static_assert(OVSA_MODEL_TYPE_ONNX == static_cast<int32_t>(CustomLoaderStatus::MODEL_TYPE_ONNX), "ONNX");
static_assert(OVSA_MODEL_TYPE_BLOB == static_cast<int32_t>(CustomLoaderStatus::MODEL_TYPE_BLOB), "BLOB");
static_assert(OVSA_MODEL_LOAD_ERROR == static_cast<int32_t>(CustomLoaderStatus::MODEL_LOAD_ERROR), "LOAD_ERROR");
static_assert(OVSA_MODEL_BLACKLISTED == static_cast<int32_t>(CustomLoaderStatus::MODEL_BLACKLISTED), "BLACKLISTED");
static_assert(OVSA_INTERNAL_ERROR == static_cast<int32_t>(CustomLoaderStatus::INTERNAL_ERROR), "INTERNAL_ERROR");

// A status returned by the C API as OVMS's status; anything unknown is an internal error.
CustomLoaderStatus to_status(int32_t s) {
    switch (s) {
    case OVSA_OK: return CustomLoaderStatus::OK;
    case OVSA_MODEL_TYPE_IR: return CustomLoaderStatus::MODEL_TYPE_IR;
    case OVSA_MODEL_TYPE_ONNX: return CustomLoaderStatus::MODEL_TYPE_ONNX;
    case OVSA_MODEL_TYPE_BLOB: return CustomLoaderStatus::MODEL_TYPE_BLOB;
    case OVSA_MODEL_LOAD_ERROR: return CustomLoaderStatus::MODEL_LOAD_ERROR;
    case OVSA_MODEL_BLACKLISTED: return CustomLoaderStatus::MODEL_BLACKLISTED;
    default: return CustomLoaderStatus::INTERNAL_ERROR;
    }
}

struct Outputs {
    std::vector<uint8_t>* model;
    std::vector<uint8_t>* weights;
};

// Resizes OVMS's vector to the exact size and hands its storage to the plugin. Whatever the
// vector held is wiped first (a shrink or a reallocation would otherwise leave it in memory
// given back to the allocator). noexcept: a failed allocation returns NULL (the plugin
// reports it).
extern "C" uint8_t* ovsa_shim_alloc(void* ctx, int32_t which, size_t size) noexcept {
    try {
        Outputs* out = static_cast<Outputs*>(ctx);
        std::vector<uint8_t>* v = which == OVSA_BUFFER_MODEL ? out->model : out->weights;
        ovsa_shim::resize_wiped(*v, size);
        return size == 0 ? nullptr : v->data();
    } catch (...) {
        return nullptr;
    }
}

class OvsaCustomLoader final : public ovms::CustomLoaderInterface {
public:
    OvsaCustomLoader() = default;
    OvsaCustomLoader(const OvsaCustomLoader&) = delete;
    OvsaCustomLoader& operator=(const OvsaCustomLoader&) = delete;

    ~OvsaCustomLoader() override {
        std::unique_lock<std::shared_mutex> lock(mutex_);
        ovsa_loader_free(loader_);
        loader_ = nullptr;
    }

    CustomLoaderStatus loaderInit(const std::string& loaderConfigFile) override {
        OvsaLoader* fresh = nullptr;
        int32_t s = ovsa_loader_new(loaderConfigFile.c_str(), &fresh);
        if (s != OVSA_OK || fresh == nullptr) {
            // OVMS ignores the return value; only an exception stops the loader's registration.
            throw std::runtime_error("ovsa loader init failed: " + last_error());
        }
        OvsaLoader* old = nullptr;
        {
            std::unique_lock<std::shared_mutex> lock(mutex_);
            old = loader_;
            loader_ = fresh;
        }
        ovsa_loader_free(old);
        return CustomLoaderStatus::OK;
    }

    CustomLoaderStatus loadModel(const std::string& modelName, const std::string& basePath,
        const int version, const std::string& loaderOptions, std::vector<uint8_t>& modelBuffer,
        std::vector<uint8_t>& weights) override {
        try {
            std::shared_lock<std::shared_mutex> lock(mutex_);
            if (loader_ == nullptr) {
                return CustomLoaderStatus::MODEL_LOAD_ERROR;
            }
            Outputs out{&modelBuffer, &weights};
            int32_t type = OVSA_MODEL_LOAD_ERROR;
            int32_t s = ovsa_loader_load_model(loader_, modelName.c_str(), basePath.c_str(),
                version, loaderOptions.c_str(), ovsa_shim_alloc, &out, &type);
            if (s != OVSA_MODEL_TYPE_IR && s != OVSA_MODEL_TYPE_ONNX) {
                // The plugin wiped what it wrote; wipe again (whatever the vectors held before)
                // and release the storage.
                ovsa_shim::release_wiped(modelBuffer);
                ovsa_shim::release_wiped(weights);
                return CustomLoaderStatus::MODEL_LOAD_ERROR;
            }
            return to_status(s);
        } catch (...) {
            ovsa_shim::release_wiped(modelBuffer);
            ovsa_shim::release_wiped(weights);
            return CustomLoaderStatus::MODEL_LOAD_ERROR;
        }
    }

    CustomLoaderStatus getModelBlacklistStatus(const std::string& modelName, const int version) override {
        try {
            std::shared_lock<std::shared_mutex> lock(mutex_);
            if (loader_ == nullptr) {
                return CustomLoaderStatus::OK;
            }
            return to_status(ovsa_loader_blacklist_status(loader_, modelName.c_str(), version));
        } catch (...) {
            return CustomLoaderStatus::INTERNAL_ERROR;
        }
    }

    CustomLoaderStatus unloadModel(const std::string& modelName, const int version) override {
        try {
            std::shared_lock<std::shared_mutex> lock(mutex_);
            if (loader_ == nullptr) {
                return CustomLoaderStatus::OK;
            }
            return to_status(ovsa_loader_unload(loader_, modelName.c_str(), version));
        } catch (...) {
            return CustomLoaderStatus::INTERNAL_ERROR;
        }
    }

    CustomLoaderStatus retireModel(const std::string& modelName) override {
        try {
            std::shared_lock<std::shared_mutex> lock(mutex_);
            if (loader_ == nullptr) {
                return CustomLoaderStatus::OK;
            }
            return to_status(ovsa_loader_retire(loader_, modelName.c_str()));
        } catch (...) {
            return CustomLoaderStatus::INTERNAL_ERROR;
        }
    }

    CustomLoaderStatus loaderDeInit() override {
        try {
            OvsaLoader* old = nullptr;
            {
                std::unique_lock<std::shared_mutex> lock(mutex_);
                old = loader_;
                loader_ = nullptr;
            }
            ovsa_loader_free(old);
            return CustomLoaderStatus::OK;
        } catch (...) {
            return CustomLoaderStatus::INTERNAL_ERROR;
        }
    }

private:
    std::shared_mutex mutex_;
    OvsaLoader* loader_ = nullptr;
};

}  // namespace

// Called by the Rust-defined, exported createCustomLoader (a symbol defined only in this
// archive would not be exported from the cdylib).
extern "C" void* ovsa_shim_create_loader() noexcept {
    try {
        return static_cast<ovms::CustomLoaderInterface*>(new OvsaCustomLoader());
    } catch (...) {
        return nullptr;
    }
}
