r"""``nn.Module`` layers that are drop-in replacements for ``torch.nn``'s.

:class:`Conv2d`, :class:`ConvTranspose2d`, :class:`MaxPool2d` and
:class:`AvgPool2d` subclass their ``torch.nn`` twins and override only the
forward computation, which runs :mod:`torchconv.functional`'s hand-written
ops. Everything else is torch's own code, so each layer has exactly its
twin's constructor arguments and defaults, constructor checks and error
messages, attributes, parameter names and shapes, initialisation (the same
seed gives the same weights), ``repr`` and ``state_dict`` keys. A
``torchconv`` layer is also an ``isinstance`` of its ``torch.nn`` twin, and
state dicts load both ways.

To swap these layers into an existing model see :func:`torchconv.convert`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import functional

__all__ = ["Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d"]


def _fx_leaf(module: torch.nn.Module, *args):
    """The ``call_module`` node a ``torch.fx`` trace records for ``module``, or None.

    FX's default tracer keeps the layers of ``torch.nn`` as leaves (one
    ``call_module`` node each, which passes such as conv-bn fusion look for)
    and traces into every other module; it knows them by their Python
    module's name. A torchconv layer records itself the same way when it is
    called with a ``torch.fx.Proxy`` by a tracer that keeps the default leaf
    rule; a tracer with a rule of its own has decided to trace into it, and
    the functional op then records itself as a ``call_function`` node.
    """
    for proxy in args:  # a loop, not a generator: this runs at every layer call
        if isinstance(proxy, torch.fx.Proxy):
            break
    else:
        return None
    if type(proxy.tracer).is_leaf_module is not torch.fx.Tracer.is_leaf_module:
        return None
    tracer = proxy.tracer
    return tracer.create_proxy("call_module", tracer.path_of_module(module), args, {})


class Conv2d(torch.nn.Conv2d):
    r"""2-d convolution layer, a drop-in replacement for :class:`torch.nn.Conv2d`.

    Computes

    .. math::
        \text{out}(N_i, C_{\text{out}_j}) = \text{bias}(C_{\text{out}_j}) +
        \sum_{k = 0}^{C_{\text{in}} / \text{groups} - 1}
        \text{weight}(C_{\text{out}_j}, k) \star \text{input}(N_i, k)

    where :math:`\star` is 2-d cross-correlation, with
    :func:`torchconv.conv2d`. Constructor, attributes, initialisation,
    ``repr`` and ``state_dict`` are :class:`torch.nn.Conv2d`'s own (this class
    subclasses it); only the forward arithmetic differs.

    Args:
        in_channels (int): Number of channels in the input image.
        out_channels (int): Number of channels produced by the convolution.
        kernel_size (int or tuple): Size of the convolving kernel.
        stride (int or tuple, optional): Stride of the convolution. Default: 1
        padding (int, tuple or str, optional): Padding added to all four sides
            of the input; or ``'valid'`` (none) or ``'same'`` (output as large
            as the input; stride 1 only, an odd extra row/column goes to the
            bottom/right). Default: 0
        dilation (int or tuple, optional): Spacing between kernel elements.
            Default: 1
        groups (int, optional): Number of blocked connections from input
            channels to output channels; must divide both channel counts.
            Default: 1
        bias (bool, optional): If ``True``, adds a learnable bias to the
            output. Default: ``True``
        padding_mode (str, optional): ``'zeros'``, ``'reflect'``,
            ``'replicate'`` or ``'circular'``. Default: ``'zeros'``
        device (torch.device, optional): where the parameters are created.
        dtype (torch.dtype, optional): dtype of the parameters.

    Shape:
        - Input: :math:`(N, C_{in}, H_{in}, W_{in})` or :math:`(C_{in}, H_{in}, W_{in})`
        - Output: :math:`(N, C_{out}, H_{out}, W_{out})` or :math:`(C_{out}, H_{out}, W_{out})`, where

          .. math::
              H_{out} = \left\lfloor\frac{H_{in} + 2 \times \text{padding}[0] - \text{dilation}[0]
                        \times (\text{kernel\_size}[0] - 1) - 1}{\text{stride}[0]} + 1\right\rfloor

          .. math::
              W_{out} = \left\lfloor\frac{W_{in} + 2 \times \text{padding}[1] - \text{dilation}[1]
                        \times (\text{kernel\_size}[1] - 1) - 1}{\text{stride}[1]} + 1\right\rfloor

    Attributes:
        weight (Tensor): learnable weights of shape
            :math:`(\text{out\_channels}, \frac{\text{in\_channels}}{\text{groups}},
            \text{kernel\_size[0]}, \text{kernel\_size[1]})`, initialised from
            :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})` with
            :math:`k = \frac{groups}{C_\text{in} * \prod_{i=0}^{1}\text{kernel\_size}[i]}`
        bias (Tensor): learnable bias of shape :math:`(\text{out\_channels})`,
            initialised from the same distribution; ``None`` if ``bias=False``.

    Examples::

        >>> # square kernels and equal stride
        >>> m = torchconv.Conv2d(16, 33, 3, stride=2)
        >>> # non-square kernels, unequal stride and padding
        >>> m = torchconv.Conv2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2))
        >>> # non-square kernels, unequal stride, padding and dilation
        >>> m = torchconv.Conv2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1))
        >>> input = torch.randn(20, 16, 50, 100)
        >>> output = m(input)
        >>> m
        Conv2d(16, 33, kernel_size=(3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1))
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            # As torch: pad explicitly in the requested mode, then convolve unpadded.
            return functional.conv2d(
                F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                weight,
                bias,
                self.stride,
                (0, 0),
                self.dilation,
                self.groups,
            )
        return functional.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input: Tensor) -> Tensor:
        """Convolves ``input`` (:math:`(N, C_{in}, H, W)` or :math:`(C_{in}, H, W)`) with the layer's weight."""
        if not torch.jit.is_scripting():
            leaf = _fx_leaf(self, input)
            if leaf is not None:
                return leaf
        return self._conv_forward(input, self.weight, self.bias)


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    r"""2-d transposed convolution layer, a drop-in replacement for :class:`torch.nn.ConvTranspose2d`.

    The gradient of :class:`Conv2d` with respect to its input ("deconvolution"),
    computed with :func:`torchconv.conv_transpose2d`. Constructor, attributes,
    initialisation, ``repr`` and ``state_dict`` are
    :class:`torch.nn.ConvTranspose2d`'s own (this class subclasses it); only
    the forward arithmetic differs.

    Args:
        in_channels (int): Number of channels in the input image.
        out_channels (int): Number of channels produced by the convolution.
        kernel_size (int or tuple): Size of the convolving kernel.
        stride (int or tuple, optional): Stride of the convolution. Default: 1
        padding (int or tuple, optional): ``dilation * (kernel_size - 1) - padding``
            zero-padding is added to both sides of each input dimension. Default: 0
        output_padding (int or tuple, optional): Additional size added to one
            side of each output dimension; smaller than stride or dilation.
            Default: 0
        groups (int, optional): Number of blocked connections from input
            channels to output channels. Default: 1
        bias (bool, optional): If ``True``, adds a learnable bias to the
            output. Default: ``True``
        dilation (int or tuple, optional): Spacing between kernel elements.
            Default: 1
        padding_mode (str, optional): only ``'zeros'`` is supported, as in
            torch; anything else raises ``ValueError``. Default: ``'zeros'``
        device (torch.device, optional): where the parameters are created.
        dtype (torch.dtype, optional): dtype of the parameters.

    Shape:
        - Input: :math:`(N, C_{in}, H_{in}, W_{in})` or :math:`(C_{in}, H_{in}, W_{in})`
        - Output: :math:`(N, C_{out}, H_{out}, W_{out})` or :math:`(C_{out}, H_{out}, W_{out})`, where

          .. math::
              H_{out} = (H_{in} - 1) \times \text{stride}[0] - 2 \times \text{padding}[0] + \text{dilation}[0]
                        \times (\text{kernel\_size}[0] - 1) + \text{output\_padding}[0] + 1

          .. math::
              W_{out} = (W_{in} - 1) \times \text{stride}[1] - 2 \times \text{padding}[1] + \text{dilation}[1]
                        \times (\text{kernel\_size}[1] - 1) + \text{output\_padding}[1] + 1

          ``forward(input, output_size)`` picks the output padding that gives
          ``output_size`` instead (torch's rule and error messages).

    Attributes:
        weight (Tensor): learnable weights of shape
            :math:`(\text{in\_channels}, \frac{\text{out\_channels}}{\text{groups}},
            \text{kernel\_size[0]}, \text{kernel\_size[1]})`, initialised from
            :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})` with
            :math:`k = \frac{groups}{C_\text{out} * \prod_{i=0}^{1}\text{kernel\_size}[i]}`
        bias (Tensor): learnable bias of shape :math:`(\text{out\_channels})`,
            initialised from the same distribution; ``None`` if ``bias=False``.

    Examples::

        >>> # With square kernels and equal stride
        >>> m = torchconv.ConvTranspose2d(16, 33, 3, stride=2)
        >>> # non-square kernels and unequal stride and with padding
        >>> m = torchconv.ConvTranspose2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2))
        >>> input = torch.randn(20, 16, 50, 100)
        >>> output = m(input)
        >>> # exact output size can be also specified as an argument
        >>> input = torch.randn(1, 16, 12, 12)
        >>> downsample = torchconv.Conv2d(16, 16, 3, stride=2, padding=1)
        >>> upsample = torchconv.ConvTranspose2d(16, 16, 3, stride=2, padding=1)
        >>> h = downsample(input)
        >>> h.size()
        torch.Size([1, 16, 6, 6])
        >>> output = upsample(h, output_size=input.size())
        >>> output.size()
        torch.Size([1, 16, 12, 12])
    """

    def forward(self, input: Tensor, output_size: Optional[list[int]] = None) -> Tensor:
        """Transposed-convolves ``input``.

        Args:
            input (Tensor): :math:`(N, C_{in}, H, W)` or :math:`(C_{in}, H, W)`.
            output_size (sequence of int, optional): the wanted output size,
                as ``(H, W)`` or the full shape; it selects the output padding
                (and must lie within ``stride - 1`` of the smallest size).
                Default: ``None`` (use :attr:`output_padding`).
        """
        if not torch.jit.is_scripting():
            leaf = _fx_leaf(self, input) if output_size is None else _fx_leaf(self, input, output_size)
            if leaf is not None:
                return leaf
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        if not isinstance(self.padding, tuple):
            raise AssertionError("self.padding must be a tuple")
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        return functional.conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation
        )


class MaxPool2d(torch.nn.MaxPool2d):
    r"""2-d max pooling layer, a drop-in replacement for :class:`torch.nn.MaxPool2d`.

    .. math::
        \text{out}(N_i, C_j, h, w) = \max_{m=0, \ldots, kH-1} \max_{n=0, \ldots, kW-1}
        \text{input}(N_i, C_j, \text{stride[0]} \times h + \text{dilation[0]} \times m,
        \text{stride[1]} \times w + \text{dilation[1]} \times n)

    computed with :func:`torchconv.max_pool2d`; padding is implicit
    :math:`-\infty`. Constructor, attributes and ``repr`` are
    :class:`torch.nn.MaxPool2d`'s own (this class subclasses it).

    Args:
        kernel_size (int or tuple): the size of the window to take a max over.
        stride (int or tuple, optional): the stride of the window.
            Default: ``kernel_size``
        padding (int or tuple, optional): implicit negative infinity padding
            on both sides; at most half the effective kernel. Default: 0
        dilation (int or tuple, optional): stride between elements within a
            window. Default: 1
        return_indices (bool, optional): if ``True``, also return the flat
            indices (``h * W + w`` within each input plane) of the maxima,
            as :class:`torch.nn.MaxUnpool2d` expects. Default: ``False``
        ceil_mode (bool, optional): when ``True``, use ceil instead of floor
            to compute the output shape; a window must still start inside the
            input or its left padding. Default: ``False``

    Shape:
        - Input: :math:`(N, C, H_{in}, W_{in})` or :math:`(C, H_{in}, W_{in})`
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`, where

          .. math::
              H_{out} = \left\lfloor\frac{H_{in} + 2 * \text{padding[0]} - \text{dilation[0]}
                    \times (\text{kernel\_size[0]} - 1) - 1}{\text{stride[0]}} + 1\right\rfloor

          and likewise for :math:`W_{out}` (rounded up with ``ceil_mode``).

    Examples::

        >>> # pool of square window of size=3, stride=2
        >>> m = torchconv.MaxPool2d(3, stride=2)
        >>> # pool of non-square window
        >>> m = torchconv.MaxPool2d((3, 2), stride=(2, 1))
        >>> input = torch.randn(20, 16, 50, 32)
        >>> output = m(input)
        >>> m
        MaxPool2d(kernel_size=(3, 2), stride=(2, 1), padding=0, dilation=1, ceil_mode=False)
    """

    def forward(self, input: Tensor):
        """Max-pools ``input``; returns ``(output, indices)`` if :attr:`return_indices`."""
        if not torch.jit.is_scripting():
            leaf = _fx_leaf(self, input)
            if leaf is not None:
                return leaf
        # Two calls, not one with return_indices: TorchScript compiles only the
        # branch this layer takes, each with one return type.
        if self.return_indices:
            return functional.max_pool2d_with_indices(
                input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
            )
        return functional.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)


class AvgPool2d(torch.nn.AvgPool2d):
    r"""2-d average pooling layer, a drop-in replacement for :class:`torch.nn.AvgPool2d`.

    .. math::
        out(N_i, C_j, h, w)  = \frac{1}{kH * kW} \sum_{m=0}^{kH-1} \sum_{n=0}^{kW-1}
                               input(N_i, C_j, stride[0] \times h + m, stride[1] \times w + n)

    computed with :func:`torchconv.avg_pool2d`; padding is implicit zeros.
    Constructor, attributes and ``repr`` are :class:`torch.nn.AvgPool2d`'s
    own (this class subclasses it).

    Args:
        kernel_size (int or tuple): the size of the window.
        stride (int or tuple, optional): the stride of the window.
            Default: ``kernel_size``
        padding (int or tuple, optional): implicit zero padding on both
            sides; at most half the kernel. Default: 0
        ceil_mode (bool, optional): when ``True``, use ceil instead of floor
            to compute the output shape. Default: ``False``
        count_include_pad (bool, optional): when ``True``, include the zero
            padding in the averaging divisor. Default: ``True``
        divisor_override (int, optional): if given, it is used as the divisor
            instead of the window size. Default: ``None``

    Shape:
        - Input: :math:`(N, C, H_{in}, W_{in})` or :math:`(C, H_{in}, W_{in})`
        - Output: :math:`(N, C, H_{out}, W_{out})` or :math:`(C, H_{out}, W_{out})`, where

          .. math::
              H_{out} = \left\lfloor\frac{H_{in}  + 2 \times \text{padding}[0] -
                \text{kernel\_size}[0]}{\text{stride}[0]} + 1\right\rfloor

          and likewise for :math:`W_{out}` (rounded up with ``ceil_mode``).

    Examples::

        >>> # pool of square window of size=3, stride=2
        >>> m = torchconv.AvgPool2d(3, stride=2)
        >>> # pool of non-square window
        >>> m = torchconv.AvgPool2d((3, 2), stride=(2, 1))
        >>> input = torch.randn(20, 16, 50, 32)
        >>> output = m(input)
        >>> m
        AvgPool2d(kernel_size=(3, 2), stride=(2, 1), padding=0)
    """

    def forward(self, input: Tensor) -> Tensor:
        """Average-pools ``input``."""
        if not torch.jit.is_scripting():
            leaf = _fx_leaf(self, input)
            if leaf is not None:
                return leaf
        return functional.avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )
