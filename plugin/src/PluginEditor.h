// The plug-in's window: the sound list and map, the 4-corner blend pad, surprise / vary, the macro knobs,
// attack / release / gain, and Load model / presets. Every control drives a parameter, so the host sees it.
#pragma once

#include "PluginProcessor.h"

#include <juce_audio_processors/juce_audio_processors.h>

namespace samplegen
{

class SampleGenEditor : public juce::AudioProcessorEditor, private juce::Timer
{
public:
    explicit SampleGenEditor (SampleGenProcessor&);
    ~SampleGenEditor() override;
    void paint (juce::Graphics&) override;
    void resized() override;

private:
    class MapView;
    class PadView;
    void timerCallback() override;
    void refreshBundle();
    void setParam (const juce::String& id, float value);

    SampleGenProcessor& proc;
    std::unique_ptr<MapView> map;
    std::unique_ptr<PadView> pad;
    juce::ComboBox soundList;
    juce::TextButton loadModel { "Load model..." }, savePreset { "Save preset..." }, openPreset { "Load preset..." };
    juce::TextButton surprise { "Surprise" }, vary { "Vary" };
    juce::Label statusLabel, padHint;
    juce::OwnedArray<juce::Slider> knobs;
    juce::OwnedArray<juce::Label> knobLabels;
    juce::Slider attack, release, gain;
    juce::Label attackLabel, releaseLabel, gainLabel;
    juce::OwnedArray<juce::AudioProcessorValueTreeState::SliderAttachment> attachments;
    std::unique_ptr<juce::FileChooser> chooser;
    int seenBundle = -1, seenPoint = -1;
    juce::TooltipWindow tooltips { this };
};

} // namespace samplegen
