var mouse = createSprite(200, 200);
mouse.setAnimation("mouse");
mouse.scale = 0.3;
var cheese = createSprite(50, 50);
cheese.setAnimation("cheese");
cheese.scale = 0.3;

function draw() {
  background("beige");
  if (keyDown("up")) { mouse.y -= 3; }
  if (keyDown("down")) { mouse.y += 3; }
  if (keyDown("left")) { mouse.x -= 3; }
  if (keyDown("right")) { mouse.x += 3; }
  if (mouse.isTouching(cheese)) {
    cheese.x = randomNumber(30, 370);
    cheese.y = randomNumber(30, 370);
  }
  drawSprites();
}
