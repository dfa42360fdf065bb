#include "generate/conversation.h"

#include "core/error.h"
#include "model/model.h"
#include "model/vision_model.h"
#include "text/unicode.h"

#include <utility>

namespace minicpmv {

namespace {

void require_vision(const Model & model) {
    if (model.vision() == nullptr) {
        throw Error(ErrorCode::unsupported, "this model has no vision (mmproj) file: load one to add images");
    }
}

PromptOptions prompt_options(const Model & model, const ChatOptions & options, bool video) {
    if (options.max_slice_nums < 0) {
        throw Error(ErrorCode::invalid_argument,
                    "max_slice_nums must be 0 (automatic) or >= 1, got " + std::to_string(options.max_slice_nums));
    }
    if (options.use_image_id < -1 || options.use_image_id > 1) {
        throw Error(ErrorCode::invalid_argument,
                    "use_image_id must be -1 (automatic), 0 or 1, got " + std::to_string(options.use_image_id));
    }
    PromptOptions o;
    o.use_image_id = options.use_image_id == -1 ? !video : options.use_image_id == 1;
    o.slicing.max_slice_nums = options.max_slice_nums != 0 ? options.max_slice_nums
                               : video                     ? 2
                                                           : default_slicing_params().max_slice_nums;
    if (const VisionModel * vision = model.vision()) {
        o.n_query = vision->config().n_query;
        o.slicing.scale_resolution = vision->config().image_size;
        o.slicing.patch_size = vision->config().patch_size;
    }
    return o;
}

// The system turn (when there is a prompt) and the turns, as the chat template takes them.
std::vector<ChatTurn> with_system(const std::string & system_prompt, const std::vector<ChatTurn> & turns) {
    std::vector<ChatTurn> all;
    all.reserve(turns.size() + 1);
    if (!system_prompt.empty()) all.push_back({"system", {{system_prompt, -1}}});
    all.insert(all.end(), turns.begin(), turns.end());
    return all;
}

}  // namespace

ChatOptions default_chat_options() { return ChatOptions{}; }

Conversation::Conversation(const Model & model, const SessionParams & params)
    : model_(model), session_(std::make_unique<Session>(model, params)) {}

void Conversation::add_text(std::string text) { pending_.parts.push_back({std::move(text), -1}); }

void Conversation::add_image(RgbImage image) {
    require_vision(model_);
    pending_.parts.push_back({"", static_cast<int32_t>(images_.size() + pending_images_.size())});
    pending_images_.push_back(std::move(image));
}

void Conversation::add_video_frames(std::vector<RgbImage> frames) {
    for (RgbImage & frame : frames) add_image(std::move(frame));
    if (!frames.empty()) pending_video_ = true;
}

void Conversation::clear_pending() {
    pending_.parts.clear();
    pending_images_.clear();
    pending_video_ = false;
}

void Conversation::set_messages(ChatMessages messages) {
    std::vector<ChatTurn> & turns = messages.turns;
    std::string system;
    if (!turns.empty() && turns.front().role == "system") {
        for (const ChatPart & part : turns.front().parts) {
            if (part.image >= 0) throw Error(ErrorCode::invalid_argument, "the system turn cannot hold images");
            system += (system.empty() ? "" : "\n") + part.text;
        }
        turns.erase(turns.begin());
    }
    if (!messages.images.empty()) require_vision(model_);
    system_prompt_ = std::move(system);
    turns_ = std::move(turns);
    images_ = std::move(messages.images);
    has_video_ = messages.video;
    clear_pending();
}

void Conversation::reset() {
    turns_.clear();
    images_.clear();
    has_video_ = false;
    clear_pending();
    reply_.clear();
}

Prompt Conversation::prompt(const ChatOptions & options) const {
    std::vector<ChatTurn> turns = with_system(system_prompt_, turns_);
    if (has_pending()) turns.push_back(pending_);
    std::vector<RgbImage> images = images_;
    images.insert(images.end(), pending_images_.begin(), pending_images_.end());
    return chatml_prompt(model_.tokenizer(), turns, std::move(images),
                         prompt_options(model_, options, has_video_ || pending_video_));
}

GenerateResult Conversation::generate(const GenerateParams & params, const ChatOptions & options,
                                      const PieceCallback & on_piece) {
    if (!has_pending() && (turns_.empty() || turns_.back().role != "user")) {
        throw Error(ErrorCode::invalid_argument, "there is no user message to answer: add text or images first");
    }
    GenerateResult r = session_->generate(prompt(options), params, on_piece);

    // Commit the turn only now: a failure above leaves the conversation as it was.
    if (has_pending()) {
        turns_.push_back(pending_);
        for (RgbImage & image : pending_images_) images_.push_back(std::move(image));
        has_video_ = has_video_ || pending_video_;
        clear_pending();
    }
    // A reply cut inside a character (max_new_tokens, cancel) holds bytes that are not UTF-8: the
    // conversation keeps it as Python's chat() sees it, with U+FFFD there, so the next turn reads it.
    reply_ = utf8_replace_invalid(r.text);
    turns_.push_back({"assistant", {{reply_, -1}}});
    return r;
}

Prompt chat_prompt(const Model & model, const ChatMessages & messages, const ChatOptions & options) {
    if (!messages.images.empty()) require_vision(model);
    return chatml_prompt(model.tokenizer(), messages.turns, messages.images, prompt_options(model, options, messages.video));
}

}  // namespace minicpmv
