// One conversation with a model (docs/model.md §7): the turns so far, the user message being built,
// the images and video frames with their slicing options, the system prompt, and the Session that
// keeps the KV cache, so a later turn evaluates only what is new. The C API, the Python binding and
// the server all hold conversations; the Model they share stays immutable, so conversations on one
// model may run on different threads at once (one thread per conversation at a time).
#pragma once

#include "generate/session.h"
#include "image/image.h"
#include "text/chat_template.h"

#include <memory>
#include <string>
#include <vector>

namespace minicpmv {

class Model;

// How a conversation's images are laid out. The automatic values follow HF's model card: video
// frames are passed with use_image_id off and at most 2 slices per frame.
struct ChatOptions {
    int32_t max_slice_nums = 0;  // >= 1, or 0: automatic (9, HF's default; 2 when there are video frames)
    int32_t use_image_id = -1;   // 0 or 1, or -1: automatic (on; off when there are video frames)
};

ChatOptions default_chat_options();

// A message's content as the conversation takes it: the turns, and the images their parts point at.
struct ChatMessages {
    std::vector<ChatTurn> turns;   // user and assistant turns; a first "system" turn sets the system prompt
    std::vector<RgbImage> images;  // numbered as the parts say
    bool video = false;            // the images are video frames (the automatic options)
};

class Conversation {
  public:
    Conversation(const Model & model, const SessionParams & params);

    const Model & model() const { return model_; }
    Session & session() { return *session_; }

    // "" uses the chat template's default system prompt, as HF chat() does without one.
    void set_system_prompt(std::string text) { system_prompt_ = std::move(text); }

    // The pending user message: parts joined with "\n", as HF chat() joins a content list.
    void add_text(std::string text);
    void add_image(RgbImage image);  // Error(unsupported) without a vision file
    void add_video_frames(std::vector<RgbImage> frames);
    void clear_pending();
    bool has_pending() const { return !pending_.parts.empty(); }

    // Replaces the whole conversation, as HF chat(msgs) passes it on every call; the last turn may be
    // the user's question (then nothing is pending). The KV cache keeps what the two share.
    void set_messages(ChatMessages messages);
    // Forgets the turns and the pending message; the system prompt stays.
    void reset();
    int32_t n_turns() const { return static_cast<int32_t>(turns_.size()); }

    // The ChatML prompt of the system prompt, the turns and the pending message, opening the reply.
    Prompt prompt(const ChatOptions & options) const;
    // Answers the pending message (or a conversation that ends with the user's turn): on success the
    // pending message and the reply (also a cancelled, partial one) become the newest turns; on an
    // error nothing changes.
    GenerateResult generate(const GenerateParams & params, const ChatOptions & options, const PieceCallback & on_piece = nullptr);
    // The latest reply, as the conversation keeps it (valid UTF-8; see generate).
    const std::string & reply() const { return reply_; }

  private:
    const Model & model_;
    std::unique_ptr<Session> session_;
    std::string system_prompt_;
    std::vector<ChatTurn> turns_;           // completed turns, user and assistant alternating
    std::vector<RgbImage> images_;          // the turns' images, numbered as their parts say
    ChatTurn pending_{"user", {}};          // the user message being built
    std::vector<RgbImage> pending_images_;  // numbered after images_
    bool has_video_ = false;                // some turn has video frames
    bool pending_video_ = false;
    std::string reply_;
};

// The prompt of a whole conversation given at once, without a Conversation (tools, tests).
Prompt chat_prompt(const Model & model, const ChatMessages & messages, const ChatOptions & options);

}  // namespace minicpmv
