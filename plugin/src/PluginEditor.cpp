#include "PluginEditor.h"

namespace samplegen
{
namespace
{
const juce::Colour background { 0xff1d2127 }, panel { 0xff2a2f37 }, accent { 0xfff0a030 };

juce::Colour familyColour (const juce::String& family)
{
    return juce::Colour::fromHSV ((float) (juce::DefaultHashFunctions::generateHash (family, 360) / 360.0), 0.55f, 0.9f, 1.0f);
}
} // namespace

/** The corpus sounds on the plane of their two main latent axes; a click plays the nearest one. */
class SampleGenEditor::MapView : public juce::Component
{
public:
    explicit MapView (SampleGenEditor& e) : editor (e) {}

    void paint (juce::Graphics& g) override
    {
        g.fillAll (panel);
        auto b = editor.proc.currentBundle();
        if (b == nullptr)
            return;
        for (int i = 0; i < b->numSounds(); ++i)
        {
            auto p = toScreen (*b, b->mapPoints[(size_t) (2 * i)], b->mapPoints[(size_t) (2 * i + 1)]);
            g.setColour (familyColour (b->soundFamilies[i]));
            g.fillEllipse (p.x - 3.0f, p.y - 3.0f, 6.0f, 6.0f);
        }
        auto z = editor.proc.currentPoint();
        if ((int) z.size() == b->latentDim)
        {
            float xy[2] = {};
            for (int a = 0; a < 2; ++a)
            {
                for (int i = 0; i < b->latentDim; ++i)
                    xy[a] += (z[(size_t) i] - b->mapMean[(size_t) i]) * b->mapAxes[(size_t) (a * b->latentDim + i)];
                xy[a] /= b->mapSd[(size_t) a];
            }
            auto p = toScreen (*b, xy[0], xy[1]);
            g.setColour (accent);
            g.drawEllipse (p.x - 7.0f, p.y - 7.0f, 14.0f, 14.0f, 2.5f);
        }
        g.setColour (juce::Colours::white.withAlpha (0.6f));
        g.setFont (12.0f);
        g.drawText ("map: click a sound", getLocalBounds().reduced (4), juce::Justification::bottomRight);
    }

    void mouseDown (const juce::MouseEvent& e) override
    {
        auto b = editor.proc.currentBundle();
        if (b == nullptr)
            return;
        int best = 0;
        float bestDist = 1e30f;
        for (int i = 0; i < b->numSounds(); ++i)
        {
            auto d = toScreen (*b, b->mapPoints[(size_t) (2 * i)], b->mapPoints[(size_t) (2 * i + 1)]).getDistanceFrom (e.position);
            if (d < bestDist)
            {
                bestDist = d;
                best = i;
            }
        }
        editor.setParam ("sound", (float) best);
        editor.setParam ("source", (float) SampleGenProcessor::fromSound);
    }

private:
    juce::Point<float> toScreen (const Bundle& b, float x, float y) const
    {
        auto r = getLocalBounds().toFloat().reduced (10.0f);
        const float x0 = b.mapView[0], y0 = b.mapView[1], x1 = b.mapView[2], y1 = b.mapView[3];
        const float u = juce::jlimit (0.0f, 1.0f, (x - x0) / juce::jmax (1e-6f, x1 - x0));
        const float v = juce::jlimit (0.0f, 1.0f, (y - y0) / juce::jmax (1e-6f, y1 - y0));
        return { r.getX() + u * r.getWidth(), r.getBottom() - v * r.getHeight() };
    }

    SampleGenEditor& editor;
};

/** The blend pad: the played point is the bilinear blend of the four corner sounds. */
class SampleGenEditor::PadView : public juce::Component
{
public:
    explicit PadView (SampleGenEditor& e) : editor (e) {}

    void paint (juce::Graphics& g) override
    {
        g.fillAll (panel);
        auto& p = editor.proc.params;
        const float x = p.getRawParameterValue ("padX")->load(), y = p.getRawParameterValue ("padY")->load();
        auto r = getLocalBounds().toFloat().reduced (8.0f);
        const bool active = juce::roundToInt (p.getRawParameterValue ("source")->load()) == SampleGenProcessor::fromPad;
        g.setColour (active ? accent : juce::Colours::grey);
        g.fillEllipse (r.getX() + x * r.getWidth() - 6.0f, r.getY() + y * r.getHeight() - 6.0f, 12.0f, 12.0f);
        g.setColour (juce::Colours::white.withAlpha (0.7f));
        g.setFont (11.0f);
        const char* ids[4] = { "cornerA", "cornerB", "cornerC", "cornerD" };
        auto b = editor.proc.currentBundle();
        if (b != nullptr)
        {
            auto area = getLocalBounds().reduced (4);
            const auto half = area.getWidth() / 2;
            for (int c = 0; c < 4; ++c)
            {
                const int v = juce::roundToInt (p.getRawParameterValue (ids[c])->load());
                auto box = area.withWidth (half).withX (area.getX() + (c % 2) * half);
                const auto where = (c < 2 ? juce::Justification::top : juce::Justification::bottom)
                                   | (c % 2 == 0 ? juce::Justification::left : juce::Justification::right);
                g.drawFittedText (b->soundNames[v > 0 ? (v - 1) % b->numSounds() : b->defaultCorners[c]], box,
                                  juce::Justification (where), 1, 0.8f);
            }
        }
    }

    void mouseDown (const juce::MouseEvent& e) override { mouseDrag (e); }

    void mouseDrag (const juce::MouseEvent& e) override
    {
        auto r = getLocalBounds().toFloat().reduced (8.0f);
        editor.setParam ("padX", juce::jlimit (0.0f, 1.0f, (e.position.x - r.getX()) / r.getWidth()));
        editor.setParam ("padY", juce::jlimit (0.0f, 1.0f, (e.position.y - r.getY()) / r.getHeight()));
        editor.setParam ("source", (float) SampleGenProcessor::fromPad);
        repaint();
    }

private:
    SampleGenEditor& editor;
};

SampleGenEditor::SampleGenEditor (SampleGenProcessor& p) : juce::AudioProcessorEditor (p), proc (p)
{
    map = std::make_unique<MapView> (*this);
    pad = std::make_unique<PadView> (*this);
    addAndMakeVisible (*map);
    addAndMakeVisible (*pad);
    addAndMakeVisible (soundList);
    soundList.setTextWhenNothingSelected ("(no model)");
    soundList.onChange = [this]
    {
        const int id = soundList.getSelectedId();
        if (id > 0)
        {
            setParam ("sound", (float) (id - 1));
            setParam ("source", (float) SampleGenProcessor::fromSound);
        }
    };
    for (auto* b : { &loadModel, &savePreset, &openPreset, &surprise, &vary })
        addAndMakeVisible (*b);
    surprise.setTooltip ("a random sound from the model's prior");
    vary.setTooltip ("a variation of the sound playing now");
    surprise.onClick = [this] { proc.surpriseNow(); };
    vary.onClick = [this] { proc.varyNow(); };
    loadModel.onClick = [this]
    {
        chooser = std::make_unique<juce::FileChooser> ("A folder written by `samplegen export plugin`",
                                                       SampleGenProcessor::defaultBundleFolder());
        chooser->launchAsync (juce::FileBrowserComponent::openMode | juce::FileBrowserComponent::canSelectDirectories,
                              [this] (const juce::FileChooser& fc)
                              {
                                  if (fc.getResult() != juce::File())
                                      proc.requestBundle (fc.getResult());
                              });
    };
    savePreset.onClick = [this]
    {
        chooser = std::make_unique<juce::FileChooser> ("Save the sound as a .latent.json", juce::File(), "*.latent.json");
        chooser->launchAsync (juce::FileBrowserComponent::saveMode | juce::FileBrowserComponent::warnAboutOverwriting,
                              [this] (const juce::FileChooser& fc)
                              {
                                  auto f = fc.getResult();
                                  if (f == juce::File())
                                      return;
                                  if (! f.getFileName().endsWith (".latent.json"))
                                      f = f.getSiblingFile (f.getFileNameWithoutExtension() + ".latent.json");
                                  if (! f.replaceWithText (proc.presetJson()))
                                      statusLabel.setText ("could not write " + f.getFullPathName(), juce::dontSendNotification);
                              });
    };
    openPreset.onClick = [this]
    {
        chooser = std::make_unique<juce::FileChooser> ("Open a .latent.json", juce::File(), "*.json");
        chooser->launchAsync (juce::FileBrowserComponent::openMode | juce::FileBrowserComponent::canSelectFiles,
                              [this] (const juce::FileChooser& fc)
                              {
                                  if (fc.getResult() == juce::File())
                                      return;
                                  auto error = proc.loadPreset (fc.getResult());
                                  if (error.isNotEmpty())
                                      statusLabel.setText (error, juce::dontSendNotification);
                              });
    };
    addAndMakeVisible (statusLabel);
    padHint.setText ("Pad: drag to blend the four corner sounds (pick corners with the host's \"Pad corner\" "
                     "parameters). Knobs move the sound along the model's main axes, in corpus standard deviations.",
                     juce::dontSendNotification);
    padHint.setFont (12.0f);
    padHint.setJustificationType (juce::Justification::topLeft);
    addAndMakeVisible (padHint);
    statusLabel.setFont (12.0f);
    for (int i = 0; i < SampleGenProcessor::maxKnobs; ++i)
    {
        auto* k = knobs.add (new juce::Slider (juce::Slider::RotaryHorizontalVerticalDrag, juce::Slider::TextBoxBelow));
        k->setTextBoxStyle (juce::Slider::TextBoxBelow, false, 60, 16);
        addAndMakeVisible (k);
        attachments.add (new juce::AudioProcessorValueTreeState::SliderAttachment (proc.params, "knob" + juce::String (i + 1), *k));
        auto* l = knobLabels.add (new juce::Label());
        l->setJustificationType (juce::Justification::centred);
        l->setFont (12.0f);
        addAndMakeVisible (l);
    }
    auto setup = [this] (juce::Slider& s, juce::Label& l, const juce::String& id, const juce::String& name)
    {
        s.setSliderStyle (juce::Slider::RotaryHorizontalVerticalDrag);
        s.setTextBoxStyle (juce::Slider::TextBoxBelow, false, 70, 16);
        addAndMakeVisible (s);
        attachments.add (new juce::AudioProcessorValueTreeState::SliderAttachment (proc.params, id, s));
        l.setText (name, juce::dontSendNotification);
        l.setJustificationType (juce::Justification::centred);
        addAndMakeVisible (l);
    };
    setup (attack, attackLabel, "attack", "Attack (s)");
    setup (release, releaseLabel, "release", "Release (s)");
    setup (gain, gainLabel, "gain", "Gain (dB)");
    setSize (860, 520);
    refreshBundle();
    startTimerHz (20);
}

SampleGenEditor::~SampleGenEditor() = default;

void SampleGenEditor::setParam (const juce::String& id, float value)
{
    if (auto* p = proc.params.getParameter (id))
    {
        p->beginChangeGesture();
        p->setValueNotifyingHost (p->convertTo0to1 (value));
        p->endChangeGesture();
    }
}

void SampleGenEditor::refreshBundle()
{
    auto b = proc.currentBundle();
    soundList.clear (juce::dontSendNotification);
    for (int k = 0; k < knobs.size(); ++k)
    {
        const bool used = b != nullptr && k < b->numKnobs();
        knobs[k]->setEnabled (used);
        knobLabels[k]->setText (used ? b->knobLabels[k] : "-", juce::dontSendNotification);
        knobs[k]->setTooltip (used ? b->knobHints[k] : juce::String());
    }
    if (b != nullptr)
        for (int i = 0; i < b->numSounds(); ++i)
            soundList.addItem (b->soundNames[i] + "  (" + b->soundFamilies[i] + ")", i + 1);
    seenBundle = proc.bundleGeneration.load();
}

void SampleGenEditor::timerCallback()
{
    if (seenBundle != proc.bundleGeneration.load())
        refreshBundle();
    auto b = proc.currentBundle();
    if (b != nullptr)
    {
        const int s = juce::roundToInt (proc.params.getRawParameterValue ("sound")->load()) % b->numSounds();
        const bool fromSound = juce::roundToInt (proc.params.getRawParameterValue ("source")->load()) == SampleGenProcessor::fromSound;
        if (fromSound && soundList.getSelectedId() != s + 1)
            soundList.setSelectedId (s + 1, juce::dontSendNotification);
        else if (! fromSound && soundList.getSelectedId() != 0)
            soundList.setSelectedId (0, juce::dontSendNotification);
    }
    statusLabel.setText (proc.status(), juce::dontSendNotification);
    if (seenPoint != proc.pointGeneration.load())
    {
        seenPoint = proc.pointGeneration.load();
        map->repaint();
    }
    pad->repaint();
}

void SampleGenEditor::paint (juce::Graphics& g)
{
    g.fillAll (background);
    g.setColour (accent);
    g.setFont (20.0f);
    g.drawText ("SampleGen", 12, 8, 200, 26, juce::Justification::left);
}

void SampleGenEditor::resized()
{
    auto r = getLocalBounds().reduced (12);
    auto top = r.removeFromTop (30);
    top.removeFromLeft (130);
    loadModel.setBounds (top.removeFromLeft (120).reduced (2));
    openPreset.setBounds (top.removeFromLeft (120).reduced (2));
    savePreset.setBounds (top.removeFromLeft (120).reduced (2));
    statusLabel.setBounds (r.removeFromBottom (22));
    r.removeFromTop (8);
    auto left = r.removeFromLeft (300);
    soundList.setBounds (left.removeFromTop (26));
    left.removeFromTop (6);
    map->setBounds (left);
    r.removeFromLeft (12);
    auto middle = r.removeFromLeft (220);
    auto buttons = middle.removeFromBottom (34);
    surprise.setBounds (buttons.removeFromLeft (buttons.getWidth() / 2).reduced (3));
    vary.setBounds (buttons.reduced (3));
    middle.removeFromBottom (6);
    pad->setBounds (middle.removeFromTop (juce::jmin (middle.getHeight(), 220)));
    padHint.setBounds (middle.reduced (0, 6));
    r.removeFromLeft (12);
    const int cell = r.getWidth() / 4;
    auto knobArea = r.removeFromTop (2 * 110);
    for (int k = 0; k < knobs.size(); ++k)
    {
        auto cellArea = juce::Rectangle<int> (knobArea.getX() + (k % 4) * cell, knobArea.getY() + (k / 4) * 110, cell, 110);
        knobLabels[k]->setBounds (cellArea.removeFromTop (18));
        knobs[k]->setBounds (cellArea.reduced (4));
    }
    r.removeFromTop (10);
    auto env = r.removeFromTop (110);
    for (auto [s, l] : { std::pair { &attack, &attackLabel }, std::pair { &release, &releaseLabel }, std::pair { &gain, &gainLabel } })
    {
        auto c = env.removeFromLeft (cell);
        l->setBounds (c.removeFromTop (18));
        s->setBounds (c.reduced (4));
    }
}

} // namespace samplegen
